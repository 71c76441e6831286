"""Score clips with transformers (CPU or GPU), in two modes.

``generate``  sample the critic's answer ``trials`` times (seeded) and parse each; the clip's score is the most common
              parsed score, ``expected_score`` their mean.
``expected``  one forward pass on the prompt followed by the answer prefix ``<answer>\\n``; the next-token
              distribution over the digits 1-5 gives p(1..5) (renormalised), the probability-weighted
              ``expected_score`` and the argmax ``score``. ``digit_mass`` is the unnormalised probability of any digit
              1-5, a check that the critic really is about to answer.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any

from recipe_lib.config import SamplingSettings, VideoSettings
from recipe_lib.errors import RecipeError
from recipe_lib.inference.parsing import parse_answer
from recipe_lib.prompts import ANSWER_PREFIX, PromptSpec, build_messages
from recipe_lib.video import ModelVideo, load_for_model

SCORES = (1, 2, 3, 4, 5)


@dataclasses.dataclass
class Prepared:
    """One clip after CPU-side work: messages rendered, frames decoded and sized."""

    item: dict[str, Any]
    text: str
    video: ModelVideo
    preprocess_s: float


def digit_token_ids(tokenizer: Any) -> list[int]:
    """Token ids of "1".."5"; each digit must be a single token (true for Qwen tokenizers and the demo critic)."""
    ids = []
    for d in SCORES:
        toks = tokenizer.encode(str(d), add_special_tokens=False)
        if len(toks) != 1:
            raise RecipeError(f"the tokenizer splits the digit {d} into {len(toks)} tokens; expected mode needs one")
        ids.append(toks[0])
    return ids


def render_prompt(
    processor: Any,
    prompt: PromptSpec,
    video: str,
    video_settings: VideoSettings,
    caption: str | None,
    answer_prefix: bool,
) -> str:
    messages = build_messages(prompt, video, video_settings, caption=caption)
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + ANSWER_PREFIX if answer_prefix else text


class HFScorer:
    """Batched scoring with a loaded critic (``recipe_lib.models.loading.LoadedCritic``)."""

    def __init__(
        self,
        critic: Any,
        prompt: PromptSpec,
        video_settings: VideoSettings,
        sampling: SamplingSettings,
        mode: str = "expected",
        use_caption: bool = False,
    ) -> None:
        if mode not in ("generate", "expected"):
            raise RecipeError(f"unknown scoring mode '{mode}'", hint="use 'generate' or 'expected'")
        self.critic = critic
        self.model = critic.model
        self.processor = critic.processor
        self.processor.tokenizer.padding_side = "left"
        self.prompt = prompt
        self.video_settings = video_settings
        self.sampling = sampling
        self.mode = mode
        self.use_caption = use_caption
        self.digit_ids = digit_token_ids(self.processor.tokenizer) if mode == "expected" else None

    def prepare(self, item: dict[str, Any]) -> Prepared:
        """CPU work for one clip (safe to run in a worker thread)."""
        start = time.perf_counter()
        video = load_for_model(item["video_url"], self.video_settings)
        caption = item.get("caption") if self.use_caption else None
        text = render_prompt(
            self.processor,
            self.prompt,
            item["video_url"],
            self.video_settings,
            caption,
            answer_prefix=self.mode == "expected",
        )
        return Prepared(item=item, text=text, video=video, preprocess_s=time.perf_counter() - start)

    def _inputs(self, batch: list[Prepared]) -> Any:
        inputs = self.processor(
            text=[p.text for p in batch],
            videos=[p.video.frames for p in batch],
            fps=[p.video.sample_fps for p in batch],
            do_resize=False,
            padding=True,
            return_tensors="pt",
        )
        return inputs.to(self.model.device)

    def score_batch(self, batch: list[Prepared]) -> list[dict[str, Any]]:
        import torch

        start = time.perf_counter()
        inputs = self._inputs(batch)
        with torch.inference_mode():
            rows = self._expected(batch, inputs) if self.mode == "expected" else self._generate(batch, inputs)
        elapsed = time.perf_counter() - start
        for p, row in zip(batch, rows):
            row["timing"] = {"preprocess_s": round(p.preprocess_s, 4), "model_s": round(elapsed / len(batch), 4)}
            row["frames"] = int(p.video.frames.shape[0])
            row["frame_size"] = [int(p.video.frames.shape[2]), int(p.video.frames.shape[3])]
        return rows

    def _expected(self, batch: list[Prepared], inputs: Any) -> list[dict[str, Any]]:
        import torch

        out = self.model(**inputs, use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        full = torch.softmax(logits, dim=-1)
        digits = full[:, self.digit_ids]
        mass = digits.sum(-1)
        probs = digits / mass.clamp_min(1e-30).unsqueeze(-1)
        rows = []
        for i in range(len(batch)):
            p = [float(x) for x in probs[i].tolist()]
            expected = sum(s * q for s, q in zip(SCORES, p))
            rows.append(
                {
                    "score": SCORES[max(range(5), key=lambda k: p[k])],
                    "expected_score": expected,
                    "probs": p,
                    "digit_mass": float(mass[i]),
                    "raw_output": None,
                    "parse_error": None,
                    "trials": [],
                }
            )
        return rows

    def _generate(self, batch: list[Prepared], inputs: Any) -> list[dict[str, Any]]:
        import torch

        s = self.sampling
        torch.manual_seed(s.seed)
        kwargs: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "num_return_sequences": s.trials}
        if s.temperature > 0:
            kwargs.update(
                do_sample=True,
                temperature=s.temperature,
                top_k=s.top_k,
                top_p=s.top_p,
                repetition_penalty=s.repetition_penalty,
            )
        else:
            kwargs.update(do_sample=False, repetition_penalty=s.repetition_penalty)
        tok = self.processor.tokenizer
        out = self.model.generate(**inputs, **kwargs, pad_token_id=tok.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1] :]
        texts = tok.batch_decode(new, skip_special_tokens=True)
        rows = []
        for i in range(len(batch)):
            trials = []
            for text in texts[i * s.trials : (i + 1) * s.trials]:
                parsed = parse_answer(text)
                trials.append({"text": text, "score": parsed.score, "error": parsed.error})
            scores = [t["score"] for t in trials if t["score"] is not None]
            if scores:
                counts = collections.Counter(scores).most_common()
                top = [v for v, c in counts if c == counts[0][1]]
                score = top[0] if len(top) == 1 else int(round(sum(scores) / len(scores)))
                expected = sum(scores) / len(scores)
            else:
                score, expected = None, None
            rows.append(
                {
                    "score": score,
                    "expected_score": expected,
                    "probs": None,
                    "digit_mass": None,
                    "raw_output": trials[0]["text"],
                    "parse_error": None if scores else trials[0]["error"],
                    "trials": trials,
                }
            )
        return rows
