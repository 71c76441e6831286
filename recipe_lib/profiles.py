"""The two profiles: what differs between the embedded demo and a full-scale run, in one record.

``demo``  the embedded tiny Qwen2.5-VL critic (built locally), synthetic known-truth clips, CPU, everything under
          ``build/`` (:mod:`recipe_lib.demo`). Runs on a fresh machine with no GPU and no hub access. Trains in this
          process, with binary labels and the compact prompt.
``full``  ``nvidia/Cosmos-Reason1-7B`` (hub id or a local path), VideoPhy-2 (or a team's data) that the user prepares,
          GPUs; training renders cosmos-rl configs and launch commands instead of training here.

Stage code reads a profile's fields and calls its methods; it never compares the profile's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from recipe_lib.config import SamplingSettings, VideoSettings
from recipe_lib.constants import FULL_CRITIC
from recipe_lib.errors import ConfigError, RecipeError

PROFILES = ("demo", "full")


@dataclasses.dataclass
class Profile:
    """Named defaults for a whole run of the recipe (see the module docstring).

    ``prompt``: what this profile's critics are fine-tuned and evaluated with. ``label_mode``: ``binary`` (pc >= 4 ->
    5, else 1) or ``graded`` (1-5 as given). ``trains_in_process``: training stages train here (demo) or render
    cosmos-rl configs (full). ``demo_model`` / ``demo_eval`` / ``demo_critics``: how the profile supplies a critic, an
    eval split and the critics to compare when the user gives none (None: the user must give them).
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

        return Profile(
            name="demo",
            model=str(demo.demo_model_dir()),
            device="cpu",
            dtype="float32",
            video=demo.demo_video(),
            sampling=SamplingSettings(max_new_tokens=16, temperature=0.6),
            batch_size=8,
            prompt=demo.DEMO_PROMPT,
            label_mode="binary",
            trains_in_process=True,
            demo_model=demo.ensure_demo_critic,
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
