"""The metric suite against scipy and scikit-learn (to 1e-9), unparsed answers, the bootstrap, per-group breakdowns."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from recipe_lib.errors import DataError
from recipe_lib.evaluation.metrics import (
    METRICS,
    confusion_matrix,
    core_metrics,
    evaluate_predictions,
    group_breakdown,
    suite_from_rows,
    table_metrics,
)

LABELS = [1, 2, 3, 4, 5]


def _random_case(seed: int, n: int, unparsed_share: float = 0.1):
    rng = np.random.default_rng(seed)
    y = rng.integers(1, 6, n)
    s = np.clip(y + rng.integers(-2, 3, n), 1, 5).astype(object)
    expected = s.astype(float) + rng.normal(0, 0.4, n)
    unparsed = rng.random(n) < unparsed_share
    s[unparsed] = None
    return y, s, expected, unparsed


def _close(a: float, b: float) -> None:
    if math.isnan(a) or math.isnan(b):
        assert math.isnan(a) and math.isnan(b), (a, b)
    else:
        assert a == pytest.approx(b, abs=1e-9), (a, b)


@pytest.mark.parametrize("seed,n", [(0, 7), (1, 40), (2, 200), (3, 1000), (4, 13)])
def test_suite_matches_scipy_and_sklearn(seed, n):
    y, s, expected, unparsed = _random_case(seed, n)
    suite = evaluate_predictions(y.tolist(), list(s), expected.tolist(), n_boot=20)
    parsed = ~unparsed
    yp, sp, ep = y[parsed], s[parsed].astype(int), expected[parsed]

    assert suite.n == n and suite.n_parsed == parsed.sum() and suite.n_unparsed == unparsed.sum()
    _close(suite["accuracy"], float((yp == sp).sum()) / n)  # unparsed counted as wrong
    _close(suite["accuracy_parsed"], skm.accuracy_score(yp, sp))
    _close(suite["within1"], float((np.abs(yp - sp) <= 1).sum()) / n)
    _close(suite["mae"], skm.mean_absolute_error(yp, sp))
    _close(suite["pearson"], stats.pearsonr(yp, sp).statistic)
    _close(suite["spearman"], stats.spearmanr(yp, sp).statistic)
    _close(suite["kendall"], stats.kendalltau(yp, sp).statistic)
    _close(suite["qwk"], skm.cohen_kappa_score(yp, sp, weights="quadratic", labels=LABELS))
    p, r, f, _ = skm.precision_recall_fscore_support(yp >= 4, sp >= 4, average="binary", zero_division=np.nan)
    _close(suite["precision"], p)
    _close(suite["recall"], r)
    _close(suite["f1"], f)
    _close(suite["binary_accuracy"], float(((yp >= 4) == (sp >= 4)).sum()) / n)
    _close(suite["roc_auc"], skm.roc_auc_score(yp >= 4, ep))
    assert (suite.confusion[:, :5] == skm.confusion_matrix(yp, sp, labels=LABELS)).all()
    assert (suite.confusion[:, 5] == np.bincount(y[unparsed] - 1, minlength=5)).all()
    assert (confusion_matrix(y.tolist(), list(s)) == suite.confusion).all()


def test_binary_threshold_is_configurable():
    y, s, expected, unparsed = _random_case(7, 300, unparsed_share=0)
    suite = evaluate_predictions(y.tolist(), list(s), expected.tolist(), threshold=3, n_boot=0)
    sp = s.astype(int)
    p, r, f, _ = skm.precision_recall_fscore_support(y >= 3, sp >= 3, average="binary")
    _close(suite["precision"], p)
    _close(suite["recall"], r)
    _close(suite["f1"], f)
    _close(suite["roc_auc"], skm.roc_auc_score(y >= 3, expected))
    assert suite.n_good == int((y >= 3).sum())


def test_auc_falls_back_to_the_integer_score():
    y, s, _, unparsed = _random_case(8, 120)
    suite = evaluate_predictions(y.tolist(), list(s), None, n_boot=0)
    parsed = ~unparsed
    _close(suite["roc_auc"], skm.roc_auc_score(y[parsed] >= 4, s[parsed].astype(int)))


def test_unparsed_are_counted_never_dropped():
    suite = evaluate_predictions([5, 5, 4, 1], [5, None, None, 1], n_boot=0, unparsed_reasons={"empty output": 2})
    assert suite.n == 4 and suite.n_parsed == 2 and suite.coverage == 0.5
    assert suite["accuracy"] == 0.5 and suite["accuracy_parsed"] == 1.0
    assert suite.confusion[4, 5] == 1 and suite.confusion[3, 5] == 1
    d = suite.to_dict()
    assert d["n_unparsed"] == 2 and d["unparsed_reasons"] == {"empty output": 2}
    assert d["confusion"]["columns"][-1] == "unparsed"


def test_constant_sides_give_nan_not_errors():
    suite = evaluate_predictions([1, 2, 3, 4], [3, 3, 3, 3], n_boot=50)
    for name in ("pearson", "spearman", "kendall"):
        assert math.isnan(suite[name])
    assert suite.to_dict()["metrics"]["pearson"] is None  # JSON-friendly
    only_good = evaluate_predictions([4, 5, 5], [4, 5, 3], [4.1, 4.6, 3.2], n_boot=10)
    assert math.isnan(only_good["roc_auc"])  # one class only


def test_bad_labels_and_predictions_are_clear_errors():
    with pytest.raises(DataError, match="labels must be whole numbers 1-5"):
        evaluate_predictions([0, 1], [1, 1])
    with pytest.raises(DataError, match="not a number"):
        evaluate_predictions(["good", 1], [1, 1])
    with pytest.raises(DataError, match="scores must be whole numbers"):
        evaluate_predictions([1, 2], [1, 2.5])
    with pytest.raises(DataError, match="2 labels but 1 predictions"):
        evaluate_predictions([1, 2], [1])


def test_bootstrap_equals_a_plain_loop_and_is_seeded():
    y, s, expected, unparsed = _random_case(11, 60)
    n_boot = 200
    suite = evaluate_predictions(y.tolist(), list(s), expected.tolist(), n_boot=n_boot, seed=3)
    # The same draws, metric by metric in plain Python.
    idx = np.random.default_rng(3).integers(0, len(y), size=(n_boot, len(y)))
    sv = np.array([0 if v is None else v for v in s])
    acc, pear, auc = [], [], []
    for row in idx:
        yy, ss, ee = y[row], sv[row], expected[row]
        acc.append(float((yy == ss).sum()) / len(yy))
        m = ss > 0
        if len(set(yy[m])) > 1 and len(set(ss[m])) > 1:
            pear.append(stats.pearsonr(yy[m], ss[m]).statistic)
        if len(set(yy[m] >= 4)) == 2:
            auc.append(skm.roc_auc_score(yy[m] >= 4, ee[m]))
    for name, values in (("accuracy", acc), ("pearson", pear), ("roc_auc", auc)):
        lo, hi = np.quantile(values, [0.025, 0.975])
        assert suite.intervals[name] == pytest.approx((lo, hi), abs=1e-9), name
    again = evaluate_predictions(y.tolist(), list(s), expected.tolist(), n_boot=n_boot, seed=3)
    assert again.intervals == suite.intervals
    other = evaluate_predictions(y.tolist(), list(s), expected.tolist(), n_boot=n_boot, seed=4)
    assert other.intervals != suite.intervals
    for name in METRICS:
        lo, hi = suite.intervals[name]
        assert lo <= hi, name


def test_bootstrap_is_vectorised():
    y, s, expected, _ = _random_case(12, 3300)
    start = time.perf_counter()
    suite = evaluate_predictions(y.tolist(), list(s), expected.tolist(), n_boot=1000)
    assert time.perf_counter() - start < 20
    lo, hi = suite.intervals["accuracy"]
    assert lo < suite["accuracy"] < hi and hi - lo < 0.05


def test_table_metrics_are_batched():
    y, s, _, _ = _random_case(13, 100)
    one = confusion_matrix(y.tolist(), list(s))
    batch = np.stack([one, one * 2, np.zeros_like(one)])
    out = table_metrics(batch)
    assert out["accuracy"][0] == pytest.approx(out["accuracy"][1])
    assert math.isnan(out["accuracy"][2])  # empty table: NaN, not a crash


def test_core_metrics_unchanged():
    m = core_metrics([5, 4, 3, 2], [5, None, 3, 1])
    assert m.n == 4 and m.n_parsed == 3 and m.accuracy == 0.5 and m.accuracy_parsed == pytest.approx(2 / 3)


def _rows():
    rows = []
    rng = np.random.default_rng(5)
    for i in range(90):
        label = int(rng.integers(1, 6))
        score = None if i % 15 == 0 else int(np.clip(label + rng.integers(-1, 2), 1, 5))
        item = {
            "pc": label,
            "model_name": ["cosmos", "wan", "hunyuan"][i % 3],
            "is_hard": bool(i % 2),
            "violation": "none" if label == 5 else ["hover", "vanish"][i % 2],
        }
        rows.append(
            {
                "video": f"v{i}.mp4",
                "score": score,
                "expected_score": None if score is None else score + 0.1,
                "parse_error": "no <answer>…</answer> block" if score is None else None,
                "item": item,
            }
        )
    rows.append({"video": "unlabelled.mp4", "score": 3, "expected_score": 3.0, "item": {"model_name": "wan"}})
    return rows


def test_suite_from_rows_and_groups():
    rows = _rows()
    suite = suite_from_rows(rows, n_boot=100)
    assert suite.n == 90  # the unlabelled clip is left out
    assert suite.unparsed_reasons == {"no <answer>…</answer> block": 6}
    groups = group_breakdown(rows, n_boot=100)
    assert set(groups["column"]) == {"model_name", "is_hard", "violation"}
    for column, part in groups.groupby("column"):
        assert part["n"].sum() == 90, column
    wan = groups[(groups["column"] == "model_name") & (groups["group"] == "wan")].iloc[0]
    direct = suite_from_rows([r for r in rows if r["item"].get("model_name") == "wan"], n_boot=100)
    assert wan["n"] == direct.n == 30 and wan["accuracy"] == pytest.approx(direct["accuracy"])
    assert wan["accuracy_lo"] <= wan["accuracy"] <= wan["accuracy_hi"]
    assert set(groups[groups["column"] == "is_hard"]["group"]) == {"true", "false"}


def test_a_large_bootstrap_draws_cell_counts_with_the_same_intervals_and_says_so():
    """Above BOOTSTRAP_PER_CLIP_MAX clips each resample is drawn as multinomial counts of the cells the metrics read
    (the same resampling distribution as drawing clips): its intervals agree with the per-clip bootstrap's, the point
    values are exact, and the suite states the method."""
    from recipe_lib.evaluation.metrics import BOOTSTRAP_PER_CLIP_MAX, bootstrap_metrics, evaluate_predictions

    rng = np.random.default_rng(5)
    n = 3 * BOOTSTRAP_PER_CLIP_MAX
    y = rng.integers(1, 6, n)
    s = np.clip(y + rng.integers(-1, 2, n), 1, 5)
    s[rng.random(n) < 0.05] = 0
    expected = [float(v) + rng.normal(0, 0.4) if v else None for v in s]
    scores = [int(v) if v else None for v in s]
    suite = evaluate_predictions(y.tolist(), scores, expected, n_boot=300)
    assert suite.to_dict()["bootstrap"]["method"].startswith("multinomial counts of cells")
    assert suite["roc_auc"] == pytest.approx(skm.roc_auc_score(y[s > 0] >= 4, [e for e in expected if e is not None]))
    values = np.array([e if e is not None else np.nan for e in expected])
    m = BOOTSTRAP_PER_CLIP_MAX  # the largest run still resampled clip by clip
    per_clip = bootstrap_metrics(y[:m], s[:m], values[:m], 4.0, n_boot=300)
    small = evaluate_predictions(y[:m].tolist(), scores[:m], expected[:m], n_boot=300)
    assert small.to_dict()["bootstrap"]["method"] == "clips" and small.intervals == per_clip
    for name in ("accuracy", "pearson", "kendall", "qwk", "f1", "roc_auc"):
        lo, hi = suite.intervals[name]
        assert lo < suite[name] < hi
        # An interval's width shrinks as 1/sqrt(n): n is 3 times the per-clip run's here.
        width = (per_clip[name][1] - per_clip[name][0]) / math.sqrt(3)
        assert (hi - lo) == pytest.approx(width, rel=0.25), name


def test_a_suite_and_a_collapse_check_read_back_from_their_json_are_the_same():
    """What a rerun keeps instead of reading a million rows again (stages/score.py): the JSON round trip loses
    nothing, NaN included (written as null)."""
    import json

    from recipe_lib.evaluation.collapse import CollapseCheck, check_collapse
    from recipe_lib.evaluation.metrics import MetricSuite, suite_from_rows

    rows = [
        {"score": None if i % 7 == 0 else 1 + i % 5, "expected_score": 2.0 + (i % 3) / 2, "parse_error": "no digit",
         "item": {"pc": 1 + i % 4}}
        for i in range(80)
    ]  # fmt: skip
    for suite in (suite_from_rows(rows, "pc"), suite_from_rows(rows[:1], "pc")):  # the second has NaN metrics
        back = MetricSuite.from_dict(json.loads(json.dumps(suite.to_dict())))
        assert back.to_dict() == suite.to_dict()
        assert back.confusion.dtype == suite.confusion.dtype and back.intervals.keys() == suite.intervals.keys()
    check = check_collapse(rows, "pc")
    assert CollapseCheck.from_dict(json.loads(json.dumps(check.to_dict()))) == check
