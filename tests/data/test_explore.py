"""Exploration helpers on a VideoPhy-2-shaped table of real clips (plus a broken one that must be counted)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from recipe_lib.errors import DataError
from recipe_lib.stages import explore


@pytest.fixture()
def table(shared_videos: list[Path], tmp_path: Path) -> pd.DataFrame:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(shared_videos[0].read_bytes()[:2000])  # a truncated download
    clips = shared_videos[:8]
    rows = [
        {
            "video_url": str(p),
            "pc": [4, 4, 4, 5, 3, 2, 4, 1][i],
            "model_name": ["cosmos", "wan", "cosmos", "hunyuan", "wan", "cosmos", "wan", "cosmos"][i],
            "category": ["sports", "fluids"][i % 2],
            "is_hard": [True, False, "True", 0, 1, None, False, True][i],
        }
        for i, p in enumerate(clips)
    ]
    rows.append({"video_url": str(broken), "pc": 4, "model_name": None, "category": "fluids", "is_hard": False})
    return pd.DataFrame(rows)


def test_label_table_and_majority_baseline(table: pd.DataFrame) -> None:
    t = explore.label_table(table)
    assert list(t.index) == [1, 2, 3, 4, 5]
    assert t["clips"].tolist() == [1, 1, 1, 5, 1] and t["share"].sum() == pytest.approx(1.0, abs=0.01)
    assert explore.majority_baseline(table) == pytest.approx(5 / 9)
    assert explore.label_counts(table) == {1: 1, 2: 1, 3: 1, 4: 5, 5: 1}  # the notebook-01 helper still works


def test_group_and_hard_tables(table: pd.DataFrame) -> None:
    g = explore.group_table(table, "model_name")
    assert g.index[0] == "cosmos" and g.loc["cosmos", "clips"] == 4
    assert g.loc["cosmos", "mean pc"] == pytest.approx((4 + 4 + 2 + 1) / 4)
    assert g.loc["cosmos", "pc=4"] == 2 and g.loc["cosmos", "pc=5"] == 0
    assert g.loc["(none)", "clips"] == 1  # a missing generator is its own group, not dropped
    assert g.loc["cosmos", "hard share"] == pytest.approx(3 / 4)  # True, "True", None, True
    assert explore.group_table(table, "category")["clips"].sum() == len(table)
    hard = explore.hard_subset(table)
    assert len(hard) == 4
    h = explore.hard_table(table)
    assert h.loc[4, "all"] == 5 and h.loc[4, "hard"] + h.loc[4, "not hard"] == 5
    with pytest.raises(DataError, match="no 'nope' column"):
        explore.group_table(table, "nope")
    assert isinstance(explore.group_labels_figure(table, "model_name"), Figure)


def test_clip_stats_count_unreadable_clips(table: pd.DataFrame) -> None:
    stats = explore.clip_stats(table, workers=2)
    assert len(stats.table) == len(table)
    assert stats.n_unreadable == 1
    video, reason = stats.unreadable()[0]
    assert video.endswith("broken.mp4") and reason
    summary = stats.summary()
    assert summary["readable"] == 8 and summary["unreadable"] == 1
    assert 3.0 < summary["duration_s"]["median"] < 8.0
    assert sum(summary["resolution"].values()) == 8 and set(summary["fps"]) <= {"8", "15", "24"}
    assert isinstance(explore.clip_stats_figure(stats), Figure)


def test_example_sheets_skip_unreadable_clips(table: pd.DataFrame, tmp_path: Path) -> None:
    only_fours = table[table["pc"] == 4].iloc[::-1]  # the broken clip comes first
    skipped: list[tuple[str, str]] = []
    sheets = explore.example_sheets(only_fours, per_label=2, out_dir=tmp_path, skipped=skipped)
    assert len(sheets) == 2 and all(png.exists() for png, _ in sheets)
    assert [Path(v).name for v, _ in skipped] == ["broken.mp4"]
    assert all(title.startswith("pc=4 · ") for _, title in sheets)  # generator named in the title
    seeded = explore.example_sheets(table.iloc[:8], per_label=1, out_dir=tmp_path / "s", seed=0)
    assert [t.split(" ")[0] for _, t in seeded] == ["pc=1", "pc=2", "pc=3", "pc=4", "pc=5"]
