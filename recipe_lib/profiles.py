"""The two profiles: what differs between the embedded demo and a full-scale run, in one record.

``demo``  the embedded tiny Qwen2.5-VL critic (built locally), synthetic known-truth clips, CPU, everything under
          ``build/`` (:mod:`recipe_lib.demo`). Runs on a fresh machine with no GPU and no hub access. Trains in this
          process, with binary labels and the compact prompt.
``full``  ``nvidia/Cosmos-Reason1-7B`` (hub id or a local path), VideoPhy-2 (or a team's data) that the user prepares,
          GPUs; training renders cosmos-rl configs and launch commands instead of training here.

Stage code reads a profile's fields and calls its methods; it never compares the profile's name.

Video and sampling settings follow the **critic**, not the profile name (:func:`critic_settings`): the demo critic
(recognised by the key our builder writes into its ``config.json``, :func:`is_demo_critic`) is scored with the demo
profile's settings, any other critic with the recipe's (the full profile's: fps 16, total_pixels 8192*28*28, the
recipe's decoding settings). A user who points ``--model`` at Cosmos-Reason1-7B and forgets ``--profile full`` still
gets the recipe's protocol; explicit settings (flags) win over both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from recipe_lib.config import SamplingSettings, VideoSettings
from recipe_lib.constants import DEMO_CRITIC_KEY, FULL_CRITIC
from recipe_lib.errors import ConfigError, RecipeError
from recipe_lib.models.loading import adapter_base, is_adapter_folder

PROFILES = ("demo", "full")


@dataclasses.dataclass
class Profile:
    """Named defaults for a whole run of the recipe (see the module docstring).

    ``prompt``: what this profile's critics are fine-tuned and evaluated with. ``label_mode``: ``binary`` (pc >= 4 ->
    5, else 1) or ``graded`` (1-5 as given). ``trains_in_process``: training stages train here (demo) or render
    cosmos-rl configs (full). ``demo_model`` / ``demo_eval`` / ``demo_critics``: how the profile supplies a critic, an
    eval split and the critics to compare when the user gives none (None: the user must give them). ``video`` /
    ``sampling``: the settings of this profile's kind of critic (:func:`critic_settings` picks them by the critic).
    """

    name: str
    model: str
    device: str
    dtype: str
    video: VideoSettings
    sampling: SamplingSettings
    batch_size: int
    prompt: str
    label_mode: str
    trains_in_process: bool
    demo_model: Callable[[], Path] | None = None
    demo_eval: Callable[[str], Path] | None = None
    demo_critics: Callable[[], dict[str, str]] | None = None

    @property
    def configs(self) -> str:
        """The folder under ``configs/`` with this profile's training configs."""
        return self.name

    def critic(self, model: str | None = None) -> str:
        """``model`` when given, else this profile's critic (the demo critic is built first when missing)."""
        if model:
            return model
        if self.demo_model is not None:
            return str(self.demo_model())
        return self.model

    def eval_data(self, given: str | None = None, label_mode: str | None = None) -> str:
        """``given`` when set, else this profile's labelled eval split (with ``label_mode``'s labels, default the
        profile's); an error naming what to pass otherwise."""
        if given:
            return str(given)
        if self.demo_eval is not None:
            return str(self.demo_eval(label_mode or self.label_mode))
        raise RecipeError(
            f"no evaluation data given for the {self.name} profile",
            hint="prepare VideoPhy-2 (plausibility prepare videophy2 ...) or your own labelled clips and pass its "
            "folder as eval_data / --data",
        )

    def critics(self, given: dict[str, str] | None = None) -> dict[str, str]:
        """The critics to evaluate: ``given``, else the profile's (demo: untrained + whatever 03/04 trained)."""
        if given:
            return dict(given)
        if self.demo_critics is not None:
            return self.demo_critics()
        return {"cosmos-reason1-7b": self.model}


def get_profile(name: str) -> Profile:
    """The ``demo`` or ``full`` profile."""
    if name == "demo":
        from recipe_lib import demo
        from recipe_lib.models.tiny import demo_model_dir, ensure_demo_critic

        return Profile(
            name="demo",
            model=str(demo_model_dir()),
            device="cpu",
            dtype="float32",
            video=demo.demo_video(),
            sampling=SamplingSettings(max_new_tokens=16, temperature=0.6),
            batch_size=8,
            prompt=demo.DEMO_PROMPT,
            label_mode="binary",
            trains_in_process=True,
            demo_model=ensure_demo_critic,
            demo_eval=demo.demo_eval_split,
            demo_critics=demo.default_demo_critics,
        )
    if name == "full":
        return Profile(
            name="full",
            model=FULL_CRITIC,
            device="auto",
            dtype="auto",
            video=VideoSettings(),
            sampling=SamplingSettings(),
            batch_size=8,
            prompt="video_reward",
            label_mode="graded",
            trains_in_process=False,
        )
    raise ConfigError(f"unknown profile '{name}'", hint="use 'demo' or 'full'")


def _config_json(model: str | Path) -> dict | None:
    """The ``config.json`` of a local critic folder, or None (a hub id, a missing or unreadable folder)."""
    import json

    try:
        for _ in range(8):  # a LoRA checkpoint: the settings of the critic it adapts (which may be one too)
            if not is_adapter_folder(model):
                break
            model = adapter_base(model)
        path = Path(model).expanduser() / "config.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecipeError):
        return None  # a symlink loop, a name too long, broken JSON, a missing base: loading the critic reports it
    return data if isinstance(data, dict) else None


def demo_critic_reason(model: str | Path) -> str | None:
    """Why ``model`` is the demo critic, or None when it is not.

    The rule: a local folder whose ``config.json`` carries ``plausibility_demo_critic`` (written by
    :func:`recipe_lib.models.tiny.build_tiny_critic`; ``save_pretrained`` keeps it, so every checkpoint trained from
    the demo critic and every copy of its folder carries it too), or a folder holding the builder's
    ``tiny_critic.json`` marker (a demo critic built before the key existed). A hub id is never the demo critic.
    """
    from recipe_lib.models.tiny import MARKER_FILE

    config = _config_json(model)
    if config is not None and config.get(DEMO_CRITIC_KEY):
        return f"its config.json carries {DEMO_CRITIC_KEY}"
    try:
        if (Path(model).expanduser() / MARKER_FILE).is_file():
            return f"its folder holds {MARKER_FILE}"
    except OSError:
        pass
    return None


def is_demo_critic(model: str | Path) -> bool:
    """Whether ``model`` is the embedded demo critic or a checkpoint trained from it (:func:`demo_critic_reason`)."""
    return demo_critic_reason(model) is not None


@dataclasses.dataclass
class CriticSettings:
    """The video and sampling settings a critic is scored with when nothing else is asked for."""

    kind: str  # "demo" or "recipe"
    video: VideoSettings
    sampling: SamplingSettings
    reason: str


def critic_settings(model: str | Path) -> CriticSettings:
    """The demo profile's settings for the demo critic, the recipe's (the full profile's) for any other critic."""
    reason = demo_critic_reason(model)
    if reason is not None:
        demo = get_profile("demo")
        return CriticSettings("demo", demo.video, demo.sampling, f"the demo critic: {reason}")
    full = get_profile("full")
    return CriticSettings("recipe", full.video, full.sampling, "not the demo critic, so the recipe's settings")
