"""Score clips against a served OpenAI-compatible endpoint (``--backend openai``): ``vllm serve``, an NVIDIA NIM, ...

``EndpointScorer(cfg, prompt)`` has the scorer interface of :func:`recipe_lib.inference.scoring.score_videos`.

Requests: one chat completion per clip — the rubric as the system message, the user message with the video and the
question — sent ``concurrency`` at a time, each within ``timeout`` seconds in all (connect, headers, body: a
:class:`recipe_lib.net.Deadline` closes the connection however slowly the server sends) and with ``retries`` retries
with exponential back-off.
The video travels as an mp4 ``data:`` URL of the frames *already sampled and sized* by :mod:`recipe_lib.video`
(re-encoded at the sampled fps), so the server's processor sees the same frames as the in-process backends; the
request asks vLLM to keep every frame it is sent (``media_io_kwargs``) and not to resize them.

``expected``  the final assistant message ``<answer>\\n`` is continued (``continue_final_message``, a vLLM extension)
              for one token with the top-20 log-probabilities; p(1..5) are the digits among them, renormalised (a
              digit outside the top 20 counts as 0 — the most an OpenAI-style endpoint returns).
``generate``  ``n = trials`` sampled answers with the recipe's sampling settings, each parsed.

Failures are never silent: an endpoint that cannot be reached at all stops the run with one clear error before any
clip is sent; a request that still fails after its retries (timeout, HTTP error, an answer without the fields this
needs) becomes a recorded skip with its reason, and — as every skip — is tried again on the next run.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipe_lib import net
from recipe_lib.errors import RecipeError
from recipe_lib.inference.hf import Prepared
from recipe_lib.inference.requests import (
    SKIP,
    TOP_LOGPROBS,
    check_mode,
    generate_row,
    row_from_answer_logprobs,
)
from recipe_lib.io import real_url, redact, register_secret
from recipe_lib.prompts import PromptSpec
from recipe_lib.video import ModelVideo, load_for_model

if TYPE_CHECKING:
    from recipe_lib.inference.score_config import ScoreConfig


class EndpointError(Exception):
    """One request failed (after its retries); the message is the skip reason."""


class AnswerTooLarge(Exception):
    """The answer is larger than any chat completion of a score."""


MAX_ANSWER_BYTES = 64 * 1024**2  # a generate-mode answer of 8 trials x 4 096 tokens is well under 1 MB


def read_body(resp: Any, limit: int) -> bytes:
    """The whole (decoded) body of a streamed response, within ``limit`` bytes. Reads take what the socket holds
    (``read1``); the request's :class:`~recipe_lib.net.Deadline` bounds the time, however slowly the server sends."""
    parts: list[bytes] = []
    size = 0
    while block := resp.raw.read1(1 << 16, decode_content=True):
        size += len(block)
        if size > limit:
            raise AnswerTooLarge()
        parts.append(block)
    return b"".join(parts)


def encode_mp4(video: ModelVideo) -> bytes:
    """The sized frames of a clip as mp4 bytes at the fps they stand for."""
    from recipe_lib.data.synthetic import write_clip

    frames = video.frames.permute(0, 2, 3, 1).contiguous().numpy()  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="plausibility-clip-") as tmp:
        path = write_clip(frames, Path(tmp) / "clip.mp4", fps=float(video.sample_fps))
        return path.read_bytes()


def chat_messages(prompt: PromptSpec, mp4: bytes, caption: str | None, mode: str) -> list[dict[str, Any]]:
    """OpenAI chat messages for one clip (the same text as the in-process prompt)."""
    text = prompt.user_prompt
    if caption:
        text = f"{text}\nThe video was generated from this description: {caption}"
    url = "data:video/mp4;base64," + base64.b64encode(mp4).decode("ascii")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": prompt.system_prompt},
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": text}]},
    ]
    if mode == "expected":
        messages.append({"role": "assistant", "content": prompt.expected_prefix()})
    return messages


def request_body(cfg: Any, messages: list[dict[str, Any]], fps: float) -> dict[str, Any]:
    """The JSON body of one chat completion."""
    s = cfg.sampling
    body: dict[str, Any] = {
        "model": cfg.endpoint.served_model or str(cfg.model),
        "messages": messages,
        "seed": s.seed,
        "media_io_kwargs": {"video": {"num_frames": -1}},
        "mm_processor_kwargs": {"fps": fps, "do_resize": False},
    }
    if cfg.mode == "expected":
        body.update(
            max_tokens=1,
            temperature=0.0,
            logprobs=True,
            top_logprobs=TOP_LOGPROBS,
            add_generation_prompt=False,
            continue_final_message=True,
        )
    else:
        body.update(
            n=s.trials,
            max_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k if s.top_k else -1,
            repetition_penalty=s.repetition_penalty,
        )
    return body


def row_from_response(data: Any, mode: str, answer_format: str = "tagged") -> dict[str, Any]:
    """A result row from a chat completion's JSON; :class:`EndpointError` when it lacks what ``mode`` needs."""
    try:
        choices = data["choices"]
        if mode == "expected":
            top = choices[0]["logprobs"]["content"][0]["top_logprobs"]
            row = row_from_answer_logprobs([(e["token"], e["logprob"]) for e in top], "the endpoint's answer")
            if SKIP in row:  # a NaN or infinite log-probability: never a row
                raise EndpointError(row[SKIP])
            return row
        return generate_row([str(c["message"]["content"] or "") for c in choices], answer_format)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise EndpointError(
            f"the endpoint's answer lacks {'the answer token log-probabilities' if mode == 'expected' else 'a message'}"
            f" ({exc.__class__.__name__}: {exc})"
        ) from exc


class EndpointScorer:
    """Concurrent chat-completion requests to a served endpoint (see the module docstring)."""

    @classmethod
    def from_config(cls, cfg: ScoreConfig, prompt: PromptSpec) -> EndpointScorer:
        return cls(cfg, prompt)

    def __init__(self, cfg: ScoreConfig, prompt: PromptSpec) -> None:
        check_mode(cfg.mode)
        prompt.require(cfg.mode)
        opts = cfg.endpoint
        if not opts.base_url:
            raise RecipeError(
                "the openai backend needs the endpoint's address",
                hint="pass --base-url http://HOST:PORT/v1 (e.g. of `vllm serve MODEL`)",
            )
        if not str(opts.base_url).startswith(("http://", "https://")):
            raise RecipeError(
                f"--base-url {opts.base_url!r} is not an http(s) URL", hint="e.g. http://127.0.0.1:8000/v1"
            )
        if opts.concurrency < 1 or opts.timeout <= 0 or opts.retries < 0:
            raise RecipeError("--concurrency must be >= 1, --timeout > 0 and --retries >= 0")
        self.cfg = cfg
        self.prompt = prompt
        self.mode = cfg.mode
        self.base_url = str(opts.base_url).rstrip("/")  # as shown: credentials redacted
        self.url = real_url(str(opts.base_url)).rstrip("/")  # as requested
        self.headers = {"Content-Type": "application/json"}
        if opts.api_key_env:
            key = os.environ.get(opts.api_key_env)
            if not key:
                raise RecipeError(
                    f"environment variable {opts.api_key_env} is not set", hint="export it with the endpoint's API key"
                )
            register_secret(key)  # never in a skip reason, a report or a line, whatever the server echoes
            self.headers["Authorization"] = f"Bearer {key}"
        self._checked = False

    def check_reachable(self) -> None:
        """One clear error when nothing answers at the address (checked once, before the first batch), within
        ``min(10 s, --timeout)`` in all."""
        import requests

        wait = min(10.0, self.cfg.endpoint.timeout)
        try:
            with net.session() as s, net.Deadline(wait) as deadline:
                s.get(f"{self.url}/models", headers=self.headers, timeout=deadline.timeouts(wait)).close()
        except (requests.RequestException, net.DeadlineExceeded) as exc:
            why = f"no answer within {wait:g} s" if isinstance(exc, net.DeadlineExceeded) else exc.__class__.__name__
            raise RecipeError(
                f"cannot reach the endpoint at {self.base_url} ({why})",
                hint="start the server (e.g. `vllm serve MODEL`) or check --base-url; finished clips are kept",
            ) from exc
        self._checked = True

    def prepare(self, item: dict[str, Any]) -> Prepared:
        """CPU work for one clip: decode, sample and size the frames, re-encode them, build the request body."""
        start = time.perf_counter()
        video = load_for_model(item["video_url"], self.cfg.video)
        caption = item.get("caption") if self.cfg.use_caption else None
        from recipe_lib.tasks import fill_prompt

        prompt = fill_prompt(self.prompt, item.get("prompt_fields"))  # a task's caption or rule
        messages = chat_messages(prompt, encode_mp4(video), caption, self.mode)
        body = request_body(self.cfg, messages, float(video.sample_fps))
        text = messages[1]["content"][1]["text"]
        return Prepared(item=item, text=text, video=video, preprocess_s=time.perf_counter() - start, encoded=body)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import requests
        import urllib3

        opts = self.cfg.endpoint
        last = ""
        for attempt in range(opts.retries + 1):
            if attempt:
                time.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)))
            status = None
            try:
                # The whole request (connect, headers, body) within --timeout: the deadline closes the connection
                # however slowly the server sends, where a read timeout would start again with every byte.
                with (
                    net.session() as session,
                    net.Deadline(opts.timeout) as deadline,
                    session.post(
                        f"{self.url}/chat/completions",
                        json=body,
                        headers=self.headers,
                        timeout=deadline.timeouts(opts.timeout),
                        stream=True,
                    ) as resp,
                ):
                    status = resp.status_code
                    data = read_body(resp, MAX_ANSWER_BYTES)
            except net.DeadlineExceeded:
                if status is None:
                    last = f"no answer within {opts.timeout:g} s (the response headers never came whole)"
                else:
                    last = f"no complete answer within {opts.timeout:g} s (HTTP {status}, the body cut short)"
                continue
            except AnswerTooLarge:
                last = f"the answer is larger than {MAX_ANSWER_BYTES} bytes"
                break
            except requests.Timeout:
                last = f"no answer within {opts.timeout:g} s"
                continue
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                last = f"request failed ({exc.__class__.__name__})"
                continue
            if status == 200:
                try:
                    return json.loads(data)
                except ValueError:
                    last = "the endpoint answered with something that is not JSON"
                    continue
            # Redacted before it is cut short: a server that echoes the API key never gets it into a skip.
            text = redact(data.decode("utf-8", "replace")).strip()
            last = f"HTTP {status}: {text[:200]}"
            if status < 500 and status != 429:
                break  # a client error does not get better by retrying
        raise EndpointError(redact(f"{last} (after {attempt + 1} attempt(s))"))

    def _one(self, p: Prepared) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            row = row_from_response(self._post(p.encoded or {}), self.mode, self.prompt.answer_format or "tagged")
        except EndpointError as exc:
            return {SKIP: f"endpoint request failed: {exc}"}
        row["timing"] = {"preprocess_s": round(p.preprocess_s, 4), "model_s": round(time.perf_counter() - start, 4)}
        row["frames"] = int(p.video.frames.shape[0])
        row["frame_size"] = [int(p.video.frames.shape[2]), int(p.video.frames.shape[3])]
        return row

    def score_batch(self, batch: list[Prepared]) -> list[dict[str, Any]]:
        if not self._checked:
            self.check_reachable()
        with cf.ThreadPoolExecutor(max_workers=min(self.cfg.endpoint.concurrency, len(batch))) as pool:
            return list(pool.map(self._one, batch))
