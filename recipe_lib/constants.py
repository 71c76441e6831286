"""Facts every stage shares, defined once: the score scale, the good-vs-bad threshold, the label column and the
full-scale critic."""

from __future__ import annotations

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
MAX_TABLE_ROWS = 100_000  # rows of one table or label sheet
MAX_CELL_CHARS = 65_536  # characters of one cell (a caption longer than this is not a caption)

# Collapse warning: a critic whose parsed answers are at least this share one score (the documented failure is a
# critic that answers "4" for everything) is flagged in summaries, reports and notebook 06. Below
# COLLAPSE_MIN_PREDICTIONS parsed answers the check is not made (and the summary says so): 3 of 3 answers being 4
# says nothing.
COLLAPSE_SHARE = 0.8
COLLAPSE_MIN_PREDICTIONS = 10
