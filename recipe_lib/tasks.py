"""Scoring tasks: what the critic is asked about a clip, and which label its answer is measured against.

VideoPhy-2 labels each generated clip three ways, and so can the critic:

``pc``    physical commonsense (the default): "does this video follow the laws of physics?", a score 1-5 measured
          against the ``pc`` label. The prompt is the profile's (``video_reward`` or the demo's compact one).
``sa``    semantic adherence: the clip's caption (the text it was generated from, column ``caption`` unless told
          otherwise) is written into the prompt (``prompts/semantic_adherence.yaml``, placeholder ``{caption}``) and the
          critic scores 1-5 how well the video shows it, measured against the ``sa`` label. A clip without a caption
          is a counted skip; inputs with no caption column at all (loose video files) are an error naming the column.
``rule``  one judgement per listed physical rule: every rule sentence in the clip's ``physics_rules_followed``,
          ``physics_rules_unfollowed`` and ``physics_rules_cannot_be_determined`` columns becomes its own request
          (``prompts/physical_rule.yaml``, placeholder ``{rule}``) answered with option 1 (the video violates the
          rule), 2 (it cannot be told from the video) or 3 (the video follows it). The column a rule came from is its
          label (VideoPhy-2 AutoEval codes these 0 violated / 1 followed / 2 cannot tell; :data:`AUTOEVAL_CODES`).

``joint`` is not a task but a metric (VideoPhy-2's leaderboard number): a clip counts when its SA and its PC are both
at least 4. It is computed whenever ``pc`` and ``sa`` are both scored
(:func:`recipe_lib.evaluation.metrics.joint_suite`).

Rules, options and keys
-----------------------
The three rule options are digits, so expected mode reads them exactly as it reads a 1-5 score: the next-token
probabilities of "1", "2" and "3" after the answer prefix, renormalised over the three (``judgement_probs``;
``option_share`` is the share of the digit mass that fell on the three options). Generate mode parses the answer; an
answer outside 1-3 is unparsed, with the reason. Every scorer backend works unchanged.

A result's cache key is the clip's content plus the settings (:mod:`recipe_lib.inference.store`); for ``sa`` and
``rule`` the task and the text written into the prompt (caption, rule) are part of it, so one clip scored for pc, for
sa and for each of its rules is several results in one store, each resumable. ``pc`` keys are what they were before
tasks existed, so earlier stores stay valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from recipe_lib.errors import ConfigError, DataError

TASKS = ("pc", "sa", "rule")
DEFAULT_TASK = "pc"
SCORED_TASKS = ("pc", "sa")  # tasks answered with a 1-5 score (filtering, thresholds, the metric suite)
KEEP_ON = ("pc", "sa", "joint")  # what a keep/reject decision can read

PROMPT_FIELDS = "prompt_fields"  # item key: the text written into the prompt's placeholders
DEFAULT_PROMPTS = {"sa": "semantic_adherence", "rule": "physical_rule"}
PLACEHOLDERS = {"sa": "caption", "rule": "rule"}

# Rule columns of VideoPhy-2 and the judgement each one records.
RULE_COLUMNS: dict[str, str] = {
    "physics_rules_followed": "followed",
    "physics_rules_unfollowed": "violated",
    "physics_rules_cannot_be_determined": "cannot_tell",
}
RULE_CLASSES = ("violated", "cannot_tell", "followed")  # options 1, 2, 3 of the rule prompt, in this order
AUTOEVAL_CODES = {0: "violated", 1: "followed", 2: "cannot_tell"}  # VideoPhy-2 AutoEval's rule answers


@dataclasses.dataclass
class TaskColumns:
    """Which columns of the clips' table each task reads: the ``pc`` and ``sa`` labels and the caption SA judges."""

    pc: str = "pc"
    sa: str = "sa"
    caption: str = "caption"

    def label(self, task: str) -> str | None:
        """The label column of a 1-5 task (None for ``rule``, whose labels are the rule columns)."""
        return {"pc": self.pc, "sa": self.sa}.get(task)


def parse_tasks(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Task names from ``"pc,sa"`` or a list, in the order given, each once; an unknown name lists the valid ones."""
    if value is None:
        return (DEFAULT_TASK,)
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    names = [p.strip().lower() for p in parts if p.strip()]
    if not names:
        raise ConfigError("--task is empty", hint=f"name one or more of {', '.join(TASKS)} (e.g. --task pc,sa)")
    for name in names:
        if name not in TASKS:
            close = difflib.get_close_matches(name, [*TASKS, "joint"], n=1)
            extra = ""
            if name == "joint" or (close and close[0] == "joint"):
                extra = "; joint is computed whenever pc and sa are both scored: use --task pc,sa"
            elif close:
                extra = f"; did you mean '{close[0]}'?"
            raise ConfigError(f"unknown task '{name}'", hint=f"valid tasks: {', '.join(TASKS)}{extra}")
    return tuple(dict.fromkeys(names))


def check_keep_on(keep_on: str | None, tasks: Sequence[str]) -> str | None:
    """What a keep/reject decision reads: ``keep_on`` when the tasks support it, else the first 1-5 task (pc before
    sa); None when no 1-5 task is scored (``rule`` alone makes no keep/reject decision)."""
    scored = [t for t in SCORED_TASKS if t in tasks]
    if keep_on is None:
        return scored[0] if scored else None
    if keep_on not in KEEP_ON:
        raise ConfigError(f"--keep-on {keep_on} is not allowed", hint=f"use one of {', '.join(KEEP_ON)}")
    needed = ["pc", "sa"] if keep_on == "joint" else [keep_on]
    missing = [t for t in needed if t not in tasks]
    if missing:
        raise ConfigError(
            f"--keep-on {keep_on} needs the task(s) {', '.join(missing)}, which this run does not score",
            hint=f"add them: --task {','.join(dict.fromkeys([*tasks, *needed]))}",
        )
    return keep_on


def task_prompt(task: str, given: str | None, pc_default: str) -> str:
    """The prompt of a task: ``given`` when set, else the task's own (pc: ``pc_default``, the profile's)."""
    if given:
        return given
    return DEFAULT_PROMPTS.get(task, pc_default)


def check_task_prompt(task: str, prompt: Any) -> None:
    """A ``sa`` / ``rule`` prompt must hold its placeholder, or the critic would never see the caption or rule."""
    field = PLACEHOLDERS.get(task)
    if field and "{" + field + "}" not in f"{prompt.system_prompt}\n{prompt.user_prompt}":
        raise ConfigError(
            f"prompt '{prompt.name}' has no {{{field}}} placeholder, so task {task} cannot show the clip's {field}",
            hint=f"write {{{field}}} where the {field} goes, or use prompts/{DEFAULT_PROMPTS[task]}.yaml",
        )


def _missing(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, float) and math.isnan(value))


def parse_rules(value: Any) -> list[str]:
    """Rule sentences of one rule cell: a list, a JSON list, or text with one rule per line; empty cells give none."""
    if _missing(value):
        return []
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                loaded = json.loads(text)
            except ValueError:
                loaded = None
            if isinstance(loaded, list):
                value = loaded
        if isinstance(value, str):
            value = text.splitlines()
    if not isinstance(value, list | tuple):
        value = [value]
    return [str(v).strip() for v in value if not _missing(v) and str(v).strip()]


def _is_loose(item: Mapping[str, Any]) -> bool:
    return set(item) <= {"video_url"}


def prepare_items(
    task: str, items: list[dict[str, Any]], columns: TaskColumns | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The requests of ``task`` for resolved clips: (items, counted skips).

    ``pc``: the items as they are. ``sa``: each clip with its caption in ``prompt_fields``; a clip without one is a
    skip; no caption column anywhere is a :class:`DataError`. ``rule``: one item per listed rule (``rule``,
    ``rule_label``, ``rule_column`` added); a clip with no rule is a skip; no rule column anywhere is a DataError.
    """
    columns = columns or TaskColumns()
    if task not in TASKS:
        parse_tasks(task)
    if task == "pc":
        return items, []
    skipped: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    if task == "sa":
        col = columns.caption
        if not any(col in it for it in items):
            loose = all(_is_loose(it) for it in items)
            raise DataError(
                f"task sa needs each clip's caption, and no input has a column '{col}'"
                + (" (loose video files carry no caption)" if loose else ""),
                hint="score a dataset folder or table with a caption column, or name the column with --caption-column",
            )
        for it in items:
            caption = it.get(col)
            if _missing(caption):
                reason = f"no caption in column '{col}' (task sa needs one)"
                skipped.append({"video": it["video_url"], "reason": reason})
                continue
            out.append({**it, PROMPT_FIELDS: {"caption": str(caption).strip()}})
        return out, skipped
    present = [c for c in RULE_COLUMNS if any(c in it for it in items)]
    if not present:
        loose = all(_is_loose(it) for it in items)
        raise DataError(
            "task rule needs the physical rules of each clip, and no input has the columns "
            + ", ".join(RULE_COLUMNS)
            + (" (loose video files carry none)" if loose else ""),
            hint="score a VideoPhy-2 dataset folder (plausibility prepare videophy2) or a table with those columns",
        )
    for it in items:
        rules: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for col in present:
            for rule in parse_rules(it.get(col)):
                if rule not in seen:  # a rule listed twice (or under two columns) is judged once, the first label kept
                    seen.add(rule)
                    rules.append((rule, RULE_COLUMNS[col], col))
        if not rules:
            skipped.append({"video": it["video_url"], "reason": f"no physical rule listed in {', '.join(present)}"})
            continue
        for index, (rule, label, col) in enumerate(rules):
            fields = {"rule": rule, "rule_label": label, "rule_column": col, "rule_index": index}
            out.append({**it, **fields, PROMPT_FIELDS: {"rule": rule}})
    return out, skipped


def key_parts(task: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """What a task adds to a result's cache key: nothing for pc (keys as before tasks), else the task and its text."""
    if task == "pc":
        return {}
    return {"task": task, "fields": dict(item.get(PROMPT_FIELDS) or {})}


def fill_prompt(prompt: Any, fields: Mapping[str, Any] | None, special_tokens: Iterable[str] = ()) -> Any:
    """``prompt`` with ``{caption}`` / ``{rule}`` replaced by the clip's text (control tokens in it neutralised, so
    data never becomes chat structure); unchanged when there is nothing to fill."""
    if not fields:
        return prompt
    from recipe_lib.prompts import neutralise_special_tokens

    special = list(special_tokens)
    system, user = prompt.system_prompt, prompt.user_prompt
    for name, value in fields.items():
        text = neutralise_special_tokens(str(value), special)
        system = system.replace("{" + name + "}", text)
        user = user.replace("{" + name + "}", text)
    return dataclasses.replace(prompt, system_prompt=system, user_prompt=user)


def finish_row(task: str, row: dict[str, Any]) -> dict[str, Any]:
    """A scorer's row for ``task``: unchanged for 1-5 tasks; for ``rule`` the answer read as one of the three options
    (``judgement``, ``judgement_probs``, ``option_share``; ``score`` the option 1-3, ``expected_score`` the
    probability-weighted option)."""
    if task != "rule" or row.get("judgement") is not None:
        return row
    row = {**row, "judgement": None, "judgement_probs": None}
    probs = row.get("probs")
    if probs:
        mass = [float(p) for p in probs[:3]]
        total = sum(mass)
        if total <= 0:
            row.update(score=None, expected_score=None, parse_error="no probability on the options 1-3")
            return row
        share = [m / total for m in mass]
        best = max(range(3), key=lambda k: share[k])
        row.update(
            score=best + 1,
            expected_score=sum((k + 1) * p for k, p in enumerate(share)),
            judgement=RULE_CLASSES[best],
            judgement_probs=dict(zip(RULE_CLASSES, share)),
            option_share=total / sum(float(p) for p in probs),
        )
        return row
    trials = [dict(t) for t in row.get("trials") or []]
    row["trials"] = trials
    options = []
    for t in trials:
        s = t.get("score")
        if s is not None and not 1 <= int(s) <= 3:
            t["error"] = f"answer {s} is not one of the options 1-3"
            t["score"] = None
        elif s is not None:
            options.append(int(s))
    if not options:
        first = next((t["error"] for t in trials if t.get("error")), row.get("parse_error") or "no answer")
        row.update(score=None, expected_score=None, parse_error=first)
        return row
    from collections import Counter

    counts = Counter(options).most_common()
    top = sorted(v for v, c in counts if c == counts[0][1])
    choice = top[0] if len(top) == 1 else 2  # a tie between options: cannot tell
    share = {cls: options.count(k + 1) / len(options) for k, cls in enumerate(RULE_CLASSES)}
    row.update(
        score=choice,
        expected_score=sum(options) / len(options),
        judgement=RULE_CLASSES[choice - 1],
        judgement_probs=share,
        parse_error=None,
    )
    return row


def task_file(name: str, task: str) -> str:
    """A per-task output file: ``scores.csv`` for pc (as before tasks), ``scores_sa.csv`` / ``scores_rule.csv``."""
    if task == "pc":
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}_{task}{dot}{suffix}"


def rows_of(rows: Iterable[Mapping[str, Any]], task: str) -> list[dict[str, Any]]:
    """The rows of one task (rows stored before tasks existed are pc rows)."""
    return [dict(r) for r in rows if (r.get("task") or "pc") == task]
