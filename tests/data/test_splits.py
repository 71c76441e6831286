"""Label tools on real ``datasets`` objects: stratified split + report, balancing, scaling."""

from __future__ import annotations

from collections import Counter

import datasets
import pytest

from recipe_lib.data.splits import as_score, balance_labels, scale_labels, split_report, stratified_split
from recipe_lib.errors import DataError


def skewed(n4: int = 40) -> datasets.Dataset:
    """VideoPhy-2-like skew: 4 dominates."""
    labels = [1] * 3 + [2] * 6 + [3] * 10 + [4] * n4 + [5] * 11
    return datasets.Dataset.from_dict({"video_url": [f"clip_{i}.mp4" for i in range(len(labels))], "pc": labels})


def test_stratified_split_keeps_every_label_in_both_parts_and_reports() -> None:
    ds = skewed()
    train, evaluation = stratified_split(ds, eval_size=0.2, seed=1, label_column="pc")
    assert train.num_rows + evaluation.num_rows == ds.num_rows
    assert not set(train["video_url"]) & set(evaluation["video_url"])
    report = split_report(train, evaluation)
    assert report.sizes == {"train": train.num_rows, "eval": evaluation.num_rows}
    for label in (1, 2, 3, 4, 5):
        assert report.counts["train"][label] >= 1 and report.counts["eval"][label] >= 1
    assert report.counts["eval"][4] == 8  # 40 * 0.2
    frame = report.frame()
    assert list(frame.index) == [1, 2, 3, 4, 5]
    assert frame.loc[4, "total"] == 40 and frame.loc[4, "eval share"] == pytest.approx(0.2)
    assert report.to_dict()["counts"]["eval"]["4"] == 8
    # Same seed, same split.
    again = stratified_split(ds, eval_size=0.2, seed=1, label_column="pc")[1]
    assert again["video_url"] == evaluation["video_url"]


def test_balance_labels_resamples_to_the_mean_count() -> None:
    ds = skewed()
    out, report = balance_labels(ds, "pc", seed=7)
    assert report.target == 14  # 70 clips / 5 labels
    assert report.before == {1: 3, 2: 6, 3: 10, 4: 40, 5: 11}
    assert report.after == {k: 14 for k in (1, 2, 3, 4, 5)}
    assert out.num_rows == 70
    # Under-represented labels keep every original clip and are topped up with copies of them.
    urls = Counter(out["video_url"])
    ones = [f"clip_{i}.mp4" for i in range(3)]
    assert all(urls[u] >= 1 for u in ones) and sum(urls[u] for u in ones) == 14
    # Over-represented labels are cut to distinct clips (no copies).
    fours = [u for u, lab in zip(out["video_url"], out["pc"]) if lab == 4]
    assert len(fours) == len(set(fours)) == 14
    # Seeded: same seed same rows, another seed other rows.
    assert balance_labels(ds, "pc", seed=7)[0]["video_url"] == out["video_url"]
    assert balance_labels(ds, "pc", seed=8)[0]["video_url"] != out["video_url"]
    assert list(report.frame()["after"]) == [14] * 5
    assert report.to_dict()["rows_after"] == 70


def test_balance_labels_rounds_the_target_half_up_and_rejects_bad_input() -> None:
    ds = datasets.Dataset.from_dict({"video_url": list("abc"), "pc": [1, 1, 5]})
    out, report = balance_labels(ds, seed=0)
    assert report.target == 2 and report.after == {1: 2, 5: 2}  # 1.5 -> 2
    with pytest.raises(DataError, match="no 'label' column"):
        balance_labels(ds, label_column="label")
    empty = datasets.Dataset.from_dict({"video_url": [], "pc": []})
    with pytest.raises(DataError, match="empty"):
        balance_labels(empty)


def test_scale_labels_binary_and_min_max() -> None:
    assert scale_labels([0, 1, 1, 0], 0, 1) == [1, 5, 5, 1]
    assert scale_labels([0.5, 0.25, 0.375, 0.625], 0, 1) == [3, 2, 3, 4]  # 2.5 -> 3 (half up, not to even)
    assert scale_labels([0, 5, 10, 7.5], 0, 10) == [1, 3, 5, 4]
    assert scale_labels(["1", "0"], 0, 1) == [5, 1]
    assert scale_labels([1, 3, 5], 1, 5) == [1, 3, 5]


@pytest.mark.parametrize(
    ("values", "fragment"),
    [([0, 1, 2], "#2: 2"), ([0, float("nan")], "#1: nan"), ([0, "good"], "#1: 'good'"), ([-1], "#0: -1")],
)
def test_scale_labels_names_values_outside_the_range(values: list, fragment: str) -> None:
    with pytest.raises(DataError, match="outside the declared range 0-1") as info:
        scale_labels(values, 0, 1)
    assert fragment in info.value.message


def test_scale_labels_rejects_an_empty_range() -> None:
    with pytest.raises(DataError, match="min < max"):
        scale_labels([1], 5, 1)


def test_as_score() -> None:
    assert [as_score(v) for v in (4, 4.0, "4", " 5 ")] == [4, 4, 4, 5]
    assert [as_score(v) for v in (0, 6, 3.5, "x", None, True, float("nan"))] == [None] * 7
