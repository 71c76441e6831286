"""Known-truth synthetic physics clips: simple 2-D scenes, each plausible or with exactly one physics violation.

Every clip is a static side view of a floor (and sometimes a wall) with one or two objects. A small simulator
(semi-implicit Euler, many sub-steps per frame, gravity, floor and wall contacts with restitution, floor friction and
ball-ball impulses) integrates the scene; a violation is one change to that simulation (an event at a frame, or one
altered contact rule), so everything before the violation is exactly what correct physics would show.

Scenes and the violations that apply to them (``x`` = applies; the same table is ``VIOLATIONS[name].scenes``)::

    violation (category)              free_fall projectile bounce slide_friction collision wall_rebound
    hover (gravity)                       x         x        x
    upward_acceleration (gravity)         x         x        x          x
    size_change (mass)                    x         x        x          x            x          x
    energy_gain (energy)                                     x          x            x          x
    no_momentum_transfer (momentum)                                                  x
    sudden_stop (momentum)                          x                   x            x          x
    effect_before_cause (causality)                                                  x
    penetration (spatial)                 x         x        x          x                       x
    vanish (permanence)                   x         x        x          x            x          x
    teleport (permanence)                 x         x        x          x            x          x

Onset
    ``onset_frame`` is the first frame in which the clip departs from its plausible twin (same scene, same
    parameters, no violation): an object's position, size or visibility differs. Frames before it are exactly what
    correct physics shows (pixel for pixel). Every violation clip shows at least ``MIN_VISIBLE_FRAMES`` frames from
    the onset on, and its deviation from correct physics reaches at least 8% of the frame's smaller side (or an object
    disappears), so the violation is clearly visible. Some violations get extra checks (an object that falls up ends
    clearly higher than where it turned; a struck ball moves while a clear gap still separates it from the striker).
    Plausible clips have ``onset_frame = -1``.

Physical-commonsense score (``pc``, 1-5), deterministic
    plausible                                   -> 5
    violation with severity ``s`` (1 subtle, 2 clear, 3 blatant; see ``VIOLATIONS``)
        early onset (onset_frame <= frames / 2)  -> pc = 4 - s    (3, 2, 1)
        late onset  (onset_frame >  frames / 2)  -> pc = 5 - s    (4, 3, 2)
    ``sa`` (semantic adherence) is 5 for every clip (the clip shows what the caption describes), ``joint`` is 1 when
    sa >= 4 and pc >= 4, and ``is_hard`` is true for violations of severity 1 or with a late onset.

Captions describe the scene and the intended physical event only; they never mention the violation. The caption
(and the look of the scene) is drawn from the clip's random stream before anything else, so a plausible clip and a
violation clip with the same stream share the caption.

Rule columns (``physics_rules_followed``, ``physics_rules_unfollowed``, ``physics_rules_cannot_be_determined``) hold
rule sentences joined by newlines (empty string for none); ``human_violated_rules`` holds a one-sentence account of
what goes wrong (empty for plausible clips).

Semantic-adherence probe (task ``sa`` on the demo): ``sa_caption`` is, for half of the clips (a seeded choice), the
caption of a clip of another, clearly different scene (never free_fall for bounce or back) and ``sa_caption_label`` is
1; for the rest it is the clip's own caption, label 5. ``caption`` and ``sa`` stay the clip's own (``sa`` 5). Score it
with ``plausibility score DATA --task sa --caption-column sa_caption --sa-column sa_caption_label``.

Encoding: H.264 (libx264 from PyAV's bundled FFmpeg; 4:2:0 for even sizes, 4:4:4 for odd sizes, which 4:2:0 cannot
represent). When no H.264 encoder is available, clips fall back to MPEG-4 part 2 (``mpeg4``), padded to even sizes.
Output is deterministic: the same seed gives byte-identical mp4 files and identical records, for any worker count,
because each clip's random stream is derived from ``(seed, index)`` only.
"""

from recipe_lib.data.synthetic.encode import h264_encoder, write_clip
from recipe_lib.data.synthetic.generate import add_sa_captions, clip_rng, generate_clips, load_synthetic, plan_clips
from recipe_lib.data.synthetic.render import render_clip
from recipe_lib.data.synthetic.spec import (
    CATEGORIES,
    MIN_VISIBLE_FRAMES,
    RECORD_COLUMNS,
    SA_CAPTION_COLUMNS,
    SCENES,
    VIOLATIONS,
    SynthConfig,
    SynthResult,
    ViolationSpec,
    is_hard,
    pc_score,
    violations_for,
)

__all__ = [
    "CATEGORIES",
    "MIN_VISIBLE_FRAMES",
    "RECORD_COLUMNS",
    "SA_CAPTION_COLUMNS",
    "SCENES",
    "VIOLATIONS",
    "SynthConfig",
    "SynthResult",
    "ViolationSpec",
    "add_sa_captions",
    "clip_rng",
    "generate_clips",
    "h264_encoder",
    "is_hard",
    "load_synthetic",
    "pc_score",
    "plan_clips",
    "render_clip",
    "violations_for",
    "write_clip",
]
