"""A team's own labelled videos: a sheet of links and scores plus a folder of clips -> train/eval datasets.

``prepare_custom(CustomDataConfig) -> CustomDataResult`` is what ``plausibility prepare custom`` and notebook 05 call.

Input
    * a label sheet: ``.xlsx`` (the named sheet or the first; other sheets are listed and ignored) or ``.csv``, with a
      link column (default ``output_link``) and a label column (default ``Physical common sense``). The header row is
      the first of the top rows that holds the link column, so a row of merged group titles above it is skipped and
      said so; a merged cell *in* the header over the link or label column is an error naming the cells.
    * a videos folder; each link is turned into a file name inside it by one rule, chosen without editing code:

      - default: the last part of the link's URL path, URL-decoded
        (``https://host/renders/a%2Cb.mp4`` -> ``a,b.mp4``);
      - ``link_pattern``: a regular expression with a named group ``name``, searched in the link
        (``r"renders/(?P<name>[^?]+)"``);
      - ``link_template``: a format string over the link's parts ``{name}`` (file name), ``{stem}``, ``{suffix}``
        (``.mp4``), ``{ext}`` (``mp4``), ``{path}`` (URL path without the leading ``/``), ``{parent}``, ``{host}``,
        ``{row}`` (sheet row), e.g. ``"{stem}.mp4"`` or ``"{parent}/{name}"``.

      The resolved file must stay inside the videos folder: absolute paths, ``..`` and symlinks pointing outside are
      refused (and reported), never followed.
    * optionally a prompts folder: ``<stem>.txt`` (or ``<stem>_prompt.txt``, the seed recipe's naming) named after a
      video's file stem becomes its caption; without one, ``caption_column`` of the sheet is used (else empty, counted
      in ``missing_prompts``).

Labels
    Without ``scale_labels`` a label must be a whole score 1-5. With it, labels are mapped from ``label_range`` (default
    0-1, i.e. binary 0/1 -> 1/5) onto 1-5 by :func:`recipe_lib.data.splits.scale_labels` (linear, rounded half up).
    A value outside the range is a dropped row; binary labels without ``scale_labels`` are an error with a hint.

Output (``out_dir``)
    ``train/`` and ``eval/`` (``save_to_disk``; columns ``video_url`` (absolute path), ``pc``, ``caption``, ``link``,
    ``sheet_row``, ``raw_label``, ``video_name``), ``split_info.json`` (counts before/after, every dropped row with its
    reason, label counts, the split and balance reports, settings) and ``dropped_rows.csv`` (the same rows, for a
    spreadsheet). The split is stratified by label (a label with a single clip cannot be in both parts: it stays in
    train, and the report says so); balancing (``balance_labels``) is applied to the train split only, so evaluation
    keeps the real label distribution and never shares a clip with training.

Rows are numbered as the spreadsheet shows them (the header is row 1 unless title rows sit above it).

Drop reasons: ``empty_row``, ``missing_link``, ``link_no_match`` (the pattern/template found no name),
``unsafe_path`` (escapes the videos folder), ``video_not_found``, ``unreadable_video``, ``missing_label``,
``label_not_a_number``, ``label_out_of_range``, ``duplicate_video`` (a second row for the same file; the first is kept).
"""

from recipe_lib.data.custom.links import LinkRule, resolve_inside
from recipe_lib.data.custom.prepare import CustomDataConfig, CustomDataResult, load_split_info, prepare_custom
from recipe_lib.data.custom.sheet import SheetTable, TeamData, find_team_data, read_sheet

__all__ = [
    "CustomDataConfig",
    "CustomDataResult",
    "LinkRule",
    "SheetTable",
    "TeamData",
    "find_team_data",
    "load_split_info",
    "prepare_custom",
    "read_sheet",
    "resolve_inside",
]
