"""The embedded demo critic: a tiny, randomly initialised Qwen2.5-VL built locally in seconds.

The ``demo`` profile needs a critic with the same architecture, processor, chat format and special tokens as
``nvidia/Cosmos-Reason1-7B`` (a Qwen2.5-VL-7B fine-tune) but small enough to build, train and run on a laptop CPU
with no hub access. :func:`build_tiny_critic` makes one from scratch:

* a byte-level BPE tokenizer trained on an embedded corpus of critic prompts, with the Qwen chat and vision special
  tokens and every digit a token of its own (so a score ``1``..``5`` is one token, as in the real tokenizer);
* a ChatML chat template that renders ``{"type": "video"}`` parts as ``<|vision_start|><|video_pad|><|vision_end|>``;
* a :class:`transformers.Qwen2_5_VLProcessor` with the real checkpoint's pixel bounds (a 112x112 frame stays
  112x112);
* a :class:`transformers.Qwen2_5_VLForConditionalGeneration` with ~0.83 M parameters, seeded, saved as safetensors.

The result loads with ``AutoProcessor`` / ``AutoModelForImageTextToText`` exactly like the real checkpoint, so every
code path of the recipe book runs unchanged on it. Its answers are noise until it is trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipe_lib.config import build_dir
from recipe_lib.constants import DEMO_CRITIC_KEY
from recipe_lib.errors import RecipeError

if TYPE_CHECKING:
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2TokenizerFast

    from recipe_lib.models.tiny_qwen3 import TinyQwen3Config

# The Qwen2.5-VL special tokens, in the order the real tokenizer numbers them (they follow the BPE vocabulary).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The real checkpoint's pixel bounds per frame: 56x56 .. 3584x3584.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 12845056

MARKER_FILE = "tiny_critic.json"
# 2: config.json carries DEMO_CRITIC_KEY (a folder built as version 1 is rebuilt: the build is deterministic).
FORMAT_VERSION = 2

# Files a complete tiny critic folder holds; the marker is written last, so its presence means the build finished.
REQUIRED_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    MARKER_FILE,
)

# Pre-tokenization: contractions, words with an optional leading space, one digit at a time, runs of punctuation,
# and whitespace (a run of spaces keeps its last space for the following word).
_SPLIT_PATTERN = r"'(?:s|t|re|ve|m|ll|d)| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# ChatML, as the Qwen2.5-VL family formats a conversation. A conversation that does not open with a system message
# gets the default one, like the real checkpoint's template, so prompts have the same layout on both critics.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part is string -%}"
    "{{- part -}}"
    "{%- elif part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- elif part['type'] in ['image', 'image_url'] -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


@dataclasses.dataclass
class TinyCriticConfig:
    """Shape of the tiny critic. The defaults give ~0.83 M parameters (~3.4 MB on disk, float32)."""

    # Language model.
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 4096
    rope_theta: float = 1_000_000.0
    # Multimodal RoPE split of head_dim / 2 over (time, height, width); the real 7B uses [16, 24, 24] of 64.
    mrope_section: list[int] = dataclasses.field(default_factory=lambda: [4, 6, 6])
    # Vision tower.
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_num_heads: int = 4
    vision_intermediate_size: int = 128
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    tokens_per_second: int = 2
    window_size: int = 112
    # Blocks with full attention (the others attend within windows); the real 7B closes every group of 8 with one.
    fullatt_block_indexes: list[int] = dataclasses.field(default_factory=lambda: [1])
    # Wider than the library default of 0.02 on purpose: a tiny critic trained from scratch with 0.02 learned nothing,
    # while the same training with 0.08 learned, so the demo critic starts from the wider init.
    initializer_range: float = 0.08
    # Target size of the BPE vocabulary (the trainer stops earlier when the corpus has no more frequent pairs). The
    # model's vocabulary is the tokenizer's length rounded up to a multiple of 64, as the real checkpoint pads its own.
    bpe_vocab_size: int = 1536
    vocab_multiple: int = 64
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`RecipeError` for a shape the model cannot be built with."""
        checks = [
            (self.hidden_size % self.num_attention_heads == 0, "hidden_size must be divisible by num_attention_heads"),
            (
                self.num_attention_heads % self.num_key_value_heads == 0,
                "num_attention_heads must be divisible by num_key_value_heads",
            ),
            (
                sum(self.mrope_section) * 2 == self.hidden_size // self.num_attention_heads,
                "mrope_section must sum to head_dim / 2 (hidden_size / num_attention_heads / 2)",
            ),
            (
                self.vision_hidden_size % self.vision_num_heads == 0,
                "vision_hidden_size must be divisible by vision_num_heads",
            ),
            (
                all(0 <= i < self.vision_depth for i in self.fullatt_block_indexes),
                "fullatt_block_indexes must index blocks of the vision tower (0 .. vision_depth - 1)",
            ),
            (
                self.window_size % (self.patch_size * self.spatial_merge_size) == 0,
                "window_size must be a multiple of patch_size * spatial_merge_size",
            ),
            (self.bpe_vocab_size >= 300, "bpe_vocab_size must be at least 300 (256 bytes plus some merges)"),
            (self.vocab_multiple >= 1, "vocab_multiple must be at least 1"),
        ]
        raise_failed_check(self, "tiny critic", checks)


def raise_failed_check(cfg: TinyCriticConfig | TinyQwen3Config, critic: str, checks: list[tuple[bool, str]]) -> None:
    """Raise :class:`RecipeError` for the first ``(ok, message)`` of ``checks`` that is not ok (``critic`` names the
    family in the message)."""
    for ok, message in checks:
        if not ok:
            raise RecipeError(f"invalid {critic} config: {message}", hint=f"got {cfg}")


_OBJECTS = (
    "ball cup glass bottle box car bicycle person dog cat bird rock leaf feather pendulum domino coin book chair "
    "table door wheel rope spring boat wave candle balloon apple egg hammer knife phone paper stone block tower "
    "river waterfall cloud flag tree ice plate spoon train plane drone"
)
_ACTIONS = (
    "falls to the ground; rolls down the slope; bounces off the wall; slides across the floor; floats on the water; "
    "sinks to the bottom; breaks into pieces; melts in the sun; swings from side to side; spins around its axis; "
    "flies through the air; crashes into the fence; stops suddenly; speeds up; slows down; tips over; "
    "is pushed by a hand; is thrown upward; is pulled by a rope; stays still; changes shape; disappears; "
    "appears out of nowhere; passes through the table; moves backward"
)
_PLACES = (
    "in the kitchen; on the street; in the park; at the beach; in a small room; on a wooden table; "
    "under the bright light; near the window; in slow motion; at night; in the rain; on the ice"
)


def _corpus() -> list[str]:
    """The embedded training text for the tokenizer: the words and layouts of physics-critic prompts and answers."""
    prompts = [
        "You are a helpful assistant.",
        "You are a careful critic of physical realism in generated videos.",
        "Watch the video carefully and decide whether it obeys the laws of physics.",
        "Does the motion of every object in the video follow physical commonsense?",
        "Rate the physical commonsense adherence of the video on a scale from 1 to 5.",
        "A score of 1 means the video clearly violates physics, and a score of 5 means it is fully plausible.",
        "Consider gravity, momentum, collisions, friction, fluids, rigid bodies, shadows and object permanence.",
        "Objects should not appear, vanish, pass through each other, float without support or change shape.",
        "Is the video physically plausible? Answer yes or no.",
        "Think step by step inside <think></think> tags, then give the final answer inside <answer></answer> tags.",
        "Put only a single digit between the answer tags.",
        "Evaluate the video against these criteria: gravity, motion, contact, conservation and continuity.",
        "The caption describes what the video is supposed to show. Judge the physics, not the visual quality.",
        "Describe what happens in the video, then explain whether each event could happen in the real world.",
        "Give a physics score for the clip. The score must be an integer.",
        "Question: does the ball bounce in a realistic way? Options: (A) yes (B) no.",
    ]
    reasoning = [
        "The ball falls under gravity, speeds up and bounces lower each time, which is plausible.",
        "The glass tips over and the water spills in a smooth stream across the table.",
        "The car moves forward while its wheels do not turn, which is not physically possible.",
        "A hand pushes the box and it slides a short distance before friction stops it.",
        "The cup passes through the solid wall without any collision, so the motion is implausible.",
        "The object floats in the air with no support and then vanishes from the scene.",
        "The pendulum swings back and forth with a steady period and slowly loses energy.",
        "Two balls collide and exchange momentum; the speeds after the impact look right.",
        "The shadow does not follow the object as it moves, so the lighting is inconsistent.",
        "Smoke rises, spreads and fades as it mixes with the air around the fire.",
        "The person drops the phone and it falls straight down, then stops on the floor.",
        "The liquid flows upward out of the bottle against gravity, which breaks physics.",
    ]
    labels = {
        1: "The video clearly violates physics.",
        2: "The video mostly violates physics.",
        3: "The video is partly plausible.",
        4: "The video is mostly plausible.",
        5: "The video fully obeys physics.",
    }
    texts: list[str] = []
    objects = _OBJECTS.split()
    actions = _ACTIONS.split("; ")
    places = _PLACES.split("; ")
    verdicts = [
        "This is consistent with gravity.",
        "This violates conservation of momentum.",
        "The motion looks natural.",
        "The speed changes without any force.",
        "The contact between the objects is correct.",
        "The object keeps its shape and size.",
        "The trajectory is a smooth curve.",
        "Friction seems to be missing.",
        "The reflection and the shadow match the scene.",
        "Nothing supports the object, yet it does not fall.",
    ]
    for round_index in range(3):
        texts.extend(prompts)
        for i, thought in enumerate(reasoning):
            score = (i + round_index) % 5 + 1
            texts.append(f"<think>\n{thought}\n</think>\n\n<answer>\n{score}\n</answer>")
            texts.append(f"<think>{thought}</think> <answer>{score}</answer>")
            texts.append(f"Score: {score}. {labels[score]}")
    # A deterministic walk over (object, action, place, verdict) gives many short descriptions of scenes.
    for i in range(len(objects) * 4):
        obj = objects[i % len(objects)]
        action = actions[(i * 7 + 3) % len(actions)]
        place = places[(i * 5 + 1) % len(places)]
        verdict = verdicts[(i * 3 + 2) % len(verdicts)]
        score = (i * 2 + 1) % 5 + 1
        texts.append(f"In the video, the {obj} {action} {place}. {verdict} Score: {score}.")
        texts.append(f"A {obj} {action}. Is this physically plausible? <answer>\n{score}\n</answer>")
    return texts


def _build_tokenizer(cfg: TinyCriticConfig) -> Qwen2TokenizerFast:
    """Train the byte-level BPE tokenizer and wrap it as a ``Qwen2TokenizerFast``."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import Qwen2TokenizerFast

    backend = Tokenizer(models.BPE(byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.bpe_vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    backend.train_from_iterator(_corpus(), trainer=trainer)
    # Appended after the BPE vocabulary in the real tokenizer's order, so <|endoftext|> gets the first id after it.
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS),
        model_max_length=cfg.max_position_embeddings,
        errors="replace",
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _build_processor(tokenizer: Qwen2TokenizerFast, cfg: TinyCriticConfig) -> Qwen2_5_VLProcessor:
    """The real checkpoint's processor classes as transformers 4.57 loads them (the fast image processor)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorFast, Qwen2VLVideoProcessor

    shape = {
        "patch_size": cfg.patch_size,
        "merge_size": cfg.spatial_merge_size,
        "temporal_patch_size": cfg.temporal_patch_size,
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
    }
    # Each gets a fresh ``size`` dict: given only min/max_pixels, these classes write them into their class default.
    image_processor = Qwen2VLImageProcessorFast(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, **shape)
    video_processor = Qwen2VLVideoProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, **shape)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def _build_model(tokenizer: Qwen2TokenizerFast, cfg: TinyCriticConfig) -> Qwen2_5_VLForConditionalGeneration:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = special_token_ids(tokenizer)
    text_config = {
        **shared_text_config(tokenizer, cfg, ids),
        "rope_scaling": {"type": "mrope", "mrope_section": list(cfg.mrope_section)},
        "use_sliding_window": False,
        "max_window_layers": cfg.num_hidden_layers,
    }
    vision_config = {
        **shared_vision_config(cfg, hidden_act="silu"),
        "tokens_per_second": cfg.tokens_per_second,
        "window_size": cfg.window_size,
        "fullatt_block_indexes": list(cfg.fullatt_block_indexes),
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        **vision_token_ids(ids),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    # Kept by save_pretrained in every checkpoint trained from this critic: how the demo critic is recognised.
    setattr(config, DEMO_CRITIC_KEY, "the demo profile's tiny critic, built by recipe_lib.models.tiny")
    return seeded_model(Qwen2_5_VLForConditionalGeneration, config, cfg, ids)


# What the Qwen2.5-VL and Qwen3-VL tiny critics build alike (recipe_lib.models.tiny_qwen3 adds its family's own).


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """The id of each of :data:`SPECIAL_TOKENS` in ``tokenizer``."""
    return {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}


def shared_text_config(tokenizer: Any, cfg: TinyCriticConfig | TinyQwen3Config, ids: dict[str, int]) -> dict[str, Any]:
    """The language-model settings both families take from ``cfg``; the vocabulary is the tokenizer's length rounded
    up to a multiple of ``cfg.vocab_multiple``."""
    return {
        "vocab_size": -(-len(tokenizer) // cfg.vocab_multiple) * cfg.vocab_multiple,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.initializer_range,
        "rms_norm_eps": 1e-6,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def shared_vision_config(cfg: TinyCriticConfig | TinyQwen3Config, hidden_act: str) -> dict[str, Any]:
    """The vision-tower settings both families take from ``cfg``."""
    return {
        "depth": cfg.vision_depth,
        "hidden_size": cfg.vision_hidden_size,
        "hidden_act": hidden_act,
        "intermediate_size": cfg.vision_intermediate_size,
        "num_heads": cfg.vision_num_heads,
        "in_channels": 3,
        "patch_size": cfg.patch_size,
        "spatial_merge_size": cfg.spatial_merge_size,
        "temporal_patch_size": cfg.temporal_patch_size,
        "out_hidden_size": cfg.hidden_size,
        "initializer_range": cfg.initializer_range,
    }


def vision_token_ids(ids: dict[str, int]) -> dict[str, int]:
    """The model config's ids of the image, video and vision start / end tokens."""
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def seeded_model(model_class: Any, config: Any, cfg: TinyCriticConfig | TinyQwen3Config, ids: dict[str, int]) -> Any:
    """``model_class(config)`` initialised from ``cfg.seed`` with ``cfg.initializer_range``, in float32 and eval mode,
    with a generation config that ends an answer at ``<|im_end|>``."""
    import torch
    from transformers import GenerationConfig

    config.initializer_range = cfg.initializer_range
    torch.manual_seed(cfg.seed)
    model = model_class(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    return model


def is_tiny_critic(folder: str | Path) -> bool:
    """True when ``folder`` holds a complete tiny critic (every file written, the build marker last)."""
    folder = Path(folder)
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        marker = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format") == FORMAT_VERSION


def tiny_critic_family(folder: str | Path) -> str | None:
    """The family (``qwen2.5-vl`` / ``qwen3-vl``) of a complete tiny critic folder, None when it is not one."""
    if not is_tiny_critic(folder):
        return None
    marker = json.loads((Path(folder) / MARKER_FILE).read_text())
    return str(marker.get("family", "qwen2.5-vl"))  # the Qwen2.5-VL demo critic's marker predates the key


def _is_replaceable(folder: Path) -> bool:
    """A folder we may overwrite: missing, empty, or holding nothing but tiny critic files."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    ours = set(REQUIRED_FILES) | {"chat_template.jinja", "chat_template.json", "special_tokens_map.json"}
    ours |= {"vocab.json", "merges.txt", "added_tokens.json", "processor_config.json"}
    return all(entry.name in ours for entry in folder.iterdir())


def build_tiny_critic(out_dir: str | Path, cfg: TinyCriticConfig | None = None) -> Path:
    """Build the tiny critic into ``out_dir`` (replacing an earlier tiny critic there) and return the folder.

    Deterministic: the same ``cfg`` gives byte-identical ``model.safetensors`` and ``tokenizer.json``. The folder is
    assembled next to ``out_dir`` and moved into place at the end, so an interrupted build never leaves half a model.
    """
    cfg = cfg or TinyCriticConfig()
    cfg.validate()
    out_dir = claim_folder(out_dir)
    tokenizer = _build_tokenizer(cfg)
    processor = _build_processor(tokenizer, cfg)
    model = _build_model(tokenizer, cfg)
    marker = {
        "description": "tiny randomly initialised Qwen2.5-VL critic for the demo profile",
        "config": dataclasses.asdict(cfg),
    }
    return write_critic_folder(out_dir, model, processor, marker)


def claim_folder(out_dir: str | Path) -> Path:
    """The resolved ``out_dir``, refused when it holds anything but an earlier tiny critic (its parent is created)."""
    out_dir = Path(out_dir).expanduser().resolve()
    if not _is_replaceable(out_dir):
        raise RecipeError(
            f"{out_dir} exists and does not look like a tiny critic folder; refusing to overwrite it",
            hint="pass a new or empty folder with --out, or remove that folder first",
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return out_dir


def write_critic_folder(out_dir: Path, model: Any, processor: Any, marker: dict[str, Any]) -> Path:
    """Save ``model`` and ``processor`` with the build marker (written last) into ``out_dir``, atomically: the folder
    is assembled next to it and moved into place, replacing an earlier tiny critic there."""
    import transformers

    tokenizer = processor.tokenizer
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes the folder private; the critic is an ordinary build output
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        marker = {
            "format": FORMAT_VERSION,
            **marker,
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": model.config.text_config.vocab_size,
            "tokenizer_length": len(tokenizer),
            "special_token_ids": {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS},
            "transformers_version": transformers.__version__,
        }
        (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, trash / "old")
            os.replace(staging, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.replace(staging, out_dir)
            except OSError:
                # Another process finished the same (deterministic) build first: keep its folder.
                if not is_tiny_critic(out_dir):
                    raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def count_parameters(folder: str | Path) -> int:
    """Number of parameters stored in a folder's ``*.safetensors`` files (read from the headers, no weights loaded)."""
    from safetensors import safe_open

    total = 0
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise RecipeError(f"no .safetensors weights in {folder}", hint="build the critic again with --force")
    for path in files:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open handles are not iterable
                numel = 1
                for dim in fh.get_slice(key).get_shape():
                    numel *= dim
                total += numel
    return total


def folder_size(folder: str | Path) -> int:
    """Bytes on disk of the files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def demo_model_dir() -> Path:
    """Where the demo critic lives: ``build/models/tiny-critic``."""
    return build_dir() / "models" / "tiny-critic"


def ensure_demo_critic(path: str | os.PathLike[str] | None = None, cfg: Any = None) -> Path:
    """Return the demo critic folder, building it first when it is missing or incomplete.

    ``path`` defaults to :func:`demo_model_dir` (``build/models/tiny-critic``). A complete folder is kept as it is,
    whatever config built it; use ``plausibility tiny-model --force`` to rebuild.
    """
    folder = Path(path or demo_model_dir()).expanduser().resolve()
    if is_tiny_critic(folder):
        return folder
    return build_tiny_critic(folder, cfg)
