"""The served-endpoint backend (``--backend openai``) against real HTTP servers on 127.0.0.1.

The main server answers chat completions with the real tiny critic: it decodes the mp4 the client sends, renders the
chat with the critic's own chat template (``continue_final_message``, as vLLM's server does) and returns the top
log-probabilities of the answer token. Others are down, slow, flaky or answer garbage.
"""

from __future__ import annotations

import base64
import http.server
import json
import math
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from recipe_lib.config import VideoSettings
from recipe_lib.errors import RecipeError
from recipe_lib.inference.endpoint import chat_messages, request_body, row_from_response
from recipe_lib.inference.score_config import EndpointOptions, ScoreConfig
from recipe_lib.inference.scoring import score_videos
from recipe_lib.profiles import get_profile
from recipe_lib.prompts import ANSWER_PREFIX, load_prompt
from support import run_cli

Handler = Callable[[dict[str, Any]], tuple[int, Any]]


@contextmanager
def serve(handler: Handler) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 (a free port) calling ``handler(json_body) -> (status, json_or_text)``."""

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: Any) -> None:
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._send(200, {"object": "list", "data": [{"id": "critic"}]})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._send(*handler(body))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


class CriticServer:
    """Chat completions answered by the real tiny critic (expected mode: top log-probabilities of one token)."""

    def __init__(self, critic_dir: Path) -> None:
        from recipe_lib.inference.hf import HFScorer
        from recipe_lib.models.loading import load_critic

        demo = get_profile("demo")
        self.critic = load_critic(str(critic_dir), device="cpu", dtype="float32")
        self.scorer = HFScorer(self.critic, load_prompt("video_reward"), demo.video, demo.sampling, mode="expected")
        self.lock = threading.Lock()
        self.texts: list[str] = []

    def _video(self, url: str, fps: float) -> Any:
        from recipe_lib.video import load_for_model

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "clip.mp4"
            path.write_bytes(base64.b64decode(url.split(",", 1)[1]))
            return load_for_model(path, VideoSettings(fps=fps, total_pixels=None, max_pixels=1 << 24, min_pixels=1))

    def __call__(self, body: dict[str, Any]) -> tuple[int, Any]:
        import torch

        from recipe_lib.inference.hf import Prepared

        messages = body["messages"]
        user = messages[1]["content"]
        video = self._video(user[0]["video_url"]["url"], body["mm_processor_kwargs"]["fps"])
        hf_messages = [
            {"role": "system", "content": [{"type": "text", "text": messages[0]["content"]}]},
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user[1]["text"]}]},
            {"role": "assistant", "content": [{"type": "text", "text": messages[2]["content"]}]},
        ]
        text = self.critic.processor.apply_chat_template(hf_messages, tokenize=False, continue_final_message=True)
        with self.lock:
            self.texts.append(text)
            row = self.scorer.score_batch([Prepared({"video_url": "sent"}, text, video, 0.0)])[0]
        tokenizer = self.critic.processor.tokenizer
        probs = torch.tensor(row["probs"]) * row["digit_mass"]
        top = [
            {"token": tokenizer.decode([tid]), "logprob": math.log(float(p))}
            for tid, p in zip(self.scorer.digit_ids, probs)
        ]
        return 200, {
            "choices": [{"index": 0, "message": {"content": ""}, "logprobs": {"content": [{"top_logprobs": top}]}}]
        }


def _cfg(tiny_critic: Path, out: Path, clips: list[Path], base_url: str, **endpoint: Any) -> ScoreConfig:
    demo = get_profile("demo")
    return ScoreConfig(
        inputs=[str(c) for c in clips],
        out_dir=out,
        model=str(tiny_critic),
        prompt="video_reward",
        video=demo.video,
        sampling=demo.sampling,
        device="cpu",
        dtype="float32",
        backend="openai",
        endpoint=EndpointOptions(base_url=base_url, served_model="critic", **endpoint),
        workers=2,
    )


def test_endpoint_scores_agree_with_the_in_process_critic(tiny_critic, synth_clips, tmp_path):
    clips = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:4]
    server = CriticServer(tiny_critic)
    with serve(server) as url:
        served = score_videos(_cfg(tiny_critic, tmp_path / "served", clips, url, concurrency=2), progress=False)
    local_cfg = _cfg(tiny_critic, tmp_path / "local", clips, "http://unused")
    local_cfg.backend = "hf"
    local = score_videos(local_cfg, progress=False)
    assert len(served.rows) == len(local.rows) == 4 and not served.skipped
    # The server saw exactly the prompt the in-process path renders (the answer prefix continued, not closed).
    assert all(t.endswith(ANSWER_PREFIX) for t in server.texts)
    by_video = {r["video"]: r for r in local.rows}
    for row in served.rows:
        ref = by_video[row["video"]]
        # The frames travel re-encoded as mp4, so probabilities differ a little, not the answer.
        assert abs(row["expected_score"] - ref["expected_score"]) < 0.05
        assert max(abs(a - b) for a, b in zip(row["probs"], ref["probs"])) < 0.02
        assert row["score"] == ref["score"] and row["frames"] == ref["frames"]


def test_request_body_and_response_parsing(tiny_critic):
    demo = get_profile("demo")
    cfg = ScoreConfig(inputs=[], out_dir="unused", model="critic", video=demo.video, sampling=demo.sampling)
    messages = chat_messages(load_prompt("video_reward"), b"\x00\x01", "a ball falls", "expected")
    assert messages[-1] == {"role": "assistant", "content": ANSWER_PREFIX}
    assert messages[1]["content"][0]["video_url"]["url"] == "data:video/mp4;base64,AAE="
    assert "a ball falls" in messages[1]["content"][1]["text"]
    body = request_body(cfg, messages, 4.0)
    assert body["continue_final_message"] and not body["add_generation_prompt"] and body["max_tokens"] == 1
    assert body["top_logprobs"] == 20 and body["mm_processor_kwargs"] == {"fps": 4.0, "do_resize": False}
    cfg.mode = "generate"
    gen = request_body(cfg, chat_messages(load_prompt("video_reward"), b"", None, "generate"), 4.0)
    assert gen["n"] == demo.sampling.trials and "continue_final_message" not in gen
    top = [
        {"token": "4", "logprob": math.log(0.6)},
        {"token": "x", "logprob": -0.1},
        {"token": "2", "logprob": math.log(0.2)},
    ]
    row = row_from_response({"choices": [{"logprobs": {"content": [{"top_logprobs": top}]}}]}, "expected")
    assert row["score"] == 4 and row["probs"][1] == pytest.approx(0.25) and row["digit_mass"] == pytest.approx(0.8)
    answers = row_from_response({"choices": [{"message": {"content": "<answer>\n3\n</answer>"}}]}, "generate")
    assert answers["score"] == 3


def test_failed_requests_are_recorded_skips_and_a_rerun_resumes(tiny_critic, synth_clips, tmp_path):
    clips = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:3]
    calls: list[str] = []

    def flaky(body: dict[str, Any]) -> tuple[int, Any]:
        calls.append("x")
        return 503, "overloaded"

    with serve(flaky) as url:
        result = score_videos(_cfg(tiny_critic, tmp_path / "out", clips, url, retries=1), progress=False)
    assert not result.rows and len(result.skipped) == 3 and len(calls) == 6  # one retry each
    assert all("HTTP 503" in s["reason"] and "2 attempt" in s["reason"] for s in result.skipped)

    def garbage(body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"choices": [{"message": {"content": "hi"}}]}  # no log-probabilities

    with serve(garbage) as url:
        result = score_videos(_cfg(tiny_critic, tmp_path / "out", clips, url, retries=0), progress=False)
    assert len(result.skipped) == 3 and all("log-probabilities" in s["reason"] for s in result.skipped)

    def slow(body: dict[str, Any]) -> tuple[int, Any]:
        time.sleep(1.5)
        return 500, "late"

    with serve(slow) as url:
        result = score_videos(
            _cfg(tiny_critic, tmp_path / "out", clips[:1], url, retries=0, timeout=0.5), progress=False
        )
    assert "no answer within 0.5 s" in result.skipped[0]["reason"]

    server = CriticServer(tiny_critic)
    with serve(server) as url:  # the same folder: what failed is scored now
        result = score_videos(_cfg(tiny_critic, tmp_path / "out", clips, url), progress=False)
    assert len(result.rows) == 3 and result.n_scored_now == 3 and not result.skipped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_errors_for_a_missing_or_unreachable_endpoint(tiny_critic, synth_clips, tmp_path):
    clip = str(sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0])
    base = ["score", clip, "--out", str(tmp_path / "o"), "--model", str(tiny_critic), "--backend", "openai"]
    no_url = run_cli(*base)
    assert no_url.returncode == 2 and "error: the openai backend needs the endpoint's address" in no_url.stderr
    down = run_cli(*base, "--base-url", f"http://127.0.0.1:{_free_port()}/v1", "--timeout", "2")
    assert down.returncode == 2 and "error: cannot reach the endpoint" in down.stderr
    assert "Traceback" not in down.stderr
    key = run_cli(*base, "--base-url", "http://127.0.0.1:9/v1", "--api-key-env", "PLAUSIBILITY_TEST_NO_SUCH_KEY")
    assert key.returncode == 2 and "PLAUSIBILITY_TEST_NO_SUCH_KEY is not set" in key.stderr


def test_endpoint_options_are_checked():
    from recipe_lib.inference.endpoint import EndpointScorer

    demo = get_profile("demo")
    cfg = ScoreConfig(inputs=[], out_dir="unused", model="m", video=demo.video, sampling=demo.sampling)
    cfg.endpoint = EndpointOptions(base_url="ftp://host/v1")
    with pytest.raises(RecipeError, match="not an http"):
        EndpointScorer(cfg, load_prompt("video_reward"))
    with pytest.raises(RecipeError, match="concurrency"):  # checked where the options are made
        EndpointOptions(base_url="http://127.0.0.1:1/v1", concurrency=0)
