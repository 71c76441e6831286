"""Facts every stage shares, defined once: the score scale, the good-vs-bad threshold, the label column, the
full-scale critic, the demo critic's marker and the published figures the plots are drawn against."""

from __future__ import annotations

import dataclasses

SCORE_MIN = 1
SCORE_MAX = 5
SCORE_VALUES = tuple(range(SCORE_MIN, SCORE_MAX + 1))  # the critic answers one of these digits

# A clip (or a label) at or above this is "good" (physically plausible): the keep/reject cut of filtering, the positive
# class of precision/recall, and what binary labels map to 5.
DEFAULT_THRESHOLD = 4.0

LABEL_COLUMN = "pc"  # VideoPhy-2's physical-commonsense score, 1-5
VIDEO_COLUMN = "video_url"
FULL_CRITIC = "nvidia/Cosmos-Reason1-7B"

# Caps on user tables, checked before a table is parsed, so a hostile or broken file fails in bounded memory.
# MAX_TABLE_ROWS applies where a table is read whole into memory: label sheets and evaluation sets (training,
# calibration, outside critics' tables) and the forms that cannot be streamed (Excel, a JSON array). Tables given to
# `plausibility score` as CSV, JSONL, Parquet or a dataset folder are streamed in chunks and have no row cap.
MAX_TABLE_ROWS = 100_000  # rows of one table or label sheet read whole
MAX_CELL_CHARS = 65_536  # characters of one cell (a caption longer than this is not a caption)
# A scoring run of at most this many clips (rows plus skips) returns its rows and skips as lists; a larger one as
# views read from results.sqlite on demand (recipe_lib.inference.store.RunView), and its report shows a bounded sample.
IN_MEMORY_ROWS = 100_000

# The key our tiny-critic builder writes into the critic's config.json. ``save_pretrained`` keeps unknown config keys,
# so every checkpoint trained from the demo critic, and any copy of its folder, carries it too: that is how the demo
# critic is recognised wherever it lies (:func:`recipe_lib.profiles.is_demo_critic`).
DEMO_CRITIC_KEY = "plausibility_demo_critic"

RECIPE_URL = "https://github.com/nvidia-cosmos/cosmos-cookbook/tree/main/docs/recipes/post_training"
REASON1_RECIPE = f"{RECIPE_URL}/reason1/physical-plausibility-check/post_training.md"
REASON2_RECIPE = f"{RECIPE_URL}/reason2/physical-plausibility-check/post_training.md"
VIDEOPHY2_PAPER = "https://arxiv.org/abs/2503.06800"


@dataclasses.dataclass(frozen=True)
class PublishedFigure:
    """One published number on VideoPhy-2's test split (``metric``: ``accuracy`` = exact match of the 1-5 score,
    ``pearson`` = Pearson r of the score against the human ``pc`` label), at a training ``step`` (None: not a
    checkpoint of a training run), with where it was published."""

    label: str
    critic: str
    stage: str  # zero-shot | sft | grpo | baseline
    metric: str
    value: float
    step: int | None
    source: str

    @property
    def cite(self) -> str:
        """The source in a few words, for plot labels."""
        if "arxiv" in self.source:
            return "arXiv " + self.source.rsplit("/", 1)[-1]
        return "Cosmos-Reason2 recipe" if "reason2" in self.source else "Cosmos-Reason1 recipe"


# The reference lines of the sweep and evaluation plots and the README's table, in one place.
# The Reason 2 recipe quotes Reason 1's SFT peak as "accuracy 0.395 at step 60"; the Reason 1 recipe itself gives 0.395
# as its best *correlation* (step 60) and 0.340 as its best accuracy (step 100) — the Reason 1 recipe's own numbers are
# used here. The GRPO figures are one checkpoint (step 900) on both metrics.
PUBLISHED: tuple[PublishedFigure, ...] = (
    PublishedFigure("zero-shot", "Cosmos-Reason1-7B", "zero-shot", "pearson", 0.293, None, REASON1_RECIPE),
    PublishedFigure("SFT best r", "Cosmos-Reason1-7B", "sft", "pearson", 0.395, 60, REASON1_RECIPE),
    PublishedFigure("SFT best accuracy", "Cosmos-Reason1-7B", "sft", "accuracy", 0.340, 100, REASON1_RECIPE),
    PublishedFigure("GRPO best", "Cosmos-Reason1-7B", "grpo", "pearson", 0.425, 900, REASON1_RECIPE),
    PublishedFigure("GRPO best", "Cosmos-Reason1-7B", "grpo", "accuracy", 0.374, 900, REASON1_RECIPE),
    PublishedFigure("Reason2 SFT best r", "Cosmos-Reason2", "sft", "pearson", 0.419, 80, REASON2_RECIPE),
    PublishedFigure("Reason2 SFT best accuracy", "Cosmos-Reason2", "sft", "accuracy", 0.401, 40, REASON2_RECIPE),
    PublishedFigure("VideoPhy-2 AutoEval", "VideoPhy-2 AutoEval", "baseline", "pearson", 0.37, None, VIDEOPHY2_PAPER),
)


def published(metric: str | None = None, stage: str | None = None) -> tuple[PublishedFigure, ...]:
    """The published figures for ``metric`` (and ``stage``), in table order."""
    return tuple(p for p in PUBLISHED if (metric is None or p.metric == metric) and (stage is None or p.stage == stage))


# Collapse warning: a critic whose parsed answers are at least this share one score (the documented failure is a
# critic that answers "4" for everything) is flagged in summaries, reports and notebook 06. Below
# COLLAPSE_MIN_PREDICTIONS parsed answers the check is not made (and the summary says so): 3 of 3 answers being 4
# says nothing.
COLLAPSE_SHARE = 0.8
COLLAPSE_MIN_PREDICTIONS = 10

# How an answer holds its score: "tagged" (<answer>N</answer>, the recipe's) or "line" (the score alone on the
# last line).
ANSWER_FORMATS = ("tagged", "line")
