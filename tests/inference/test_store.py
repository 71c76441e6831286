"""The SQLite result store: atomic batches, damage reported by position and skipped, the results.jsonl import, any
file name, parallel writers, disk-full errors that name the file."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3

import pytest

from recipe_lib.inference.store import ResultStore, read_store, row_text


def _row(i: int, **kw) -> dict:
    return {"key": f"k{i:06d}", "video": f"/clips/c{i}.mp4", "score": 1 + i % 5, "expected_score": 2.5, **kw}


def test_rows_round_trip_and_are_never_written_twice(tmp_path):
    with ResultStore(tmp_path / "results.sqlite") as store:
        assert store.append([_row(i) for i in range(5)]) == 5
        assert store.append([_row(3), _row(4, score=9), _row(5)]) == 1  # only k000005 is new
        assert len(store) == 6 and "k000004" in store and "nope" not in store
        assert store.get("k000004")["score"] == 5
        assert store.missing(["k000001", "x", "y"]) == {"x", "y"}
    assert [r["key"] for r in read_store(tmp_path)] == [f"k{i:06d}" for i in range(6)]


def test_a_damaged_middle_row_is_reported_by_position_and_replaced_on_rescore(tmp_path):
    path = tmp_path / "results.sqlite"
    with ResultStore(path) as store:
        store.append([_row(i) for i in range(40)])
    with sqlite3.connect(path) as db:  # bit rot in row 11: its text is no longer JSON
        db.execute("UPDATE results SET row = substr(row, 1, 20) WHERE pos = 11")
    with ResultStore(path) as store:
        rows = store.rows()
        assert len(rows) == 39 and "k000010" not in {r["key"] for r in rows}  # the rows after it are all there
        assert any(f"{path} row 11 is damaged" in w for w in store.warnings), store.warnings
        assert store.missing(f"k{i:06d}" for i in range(40)) == {"k000010"}  # scored again on a rerun
        assert store.append([_row(10, score=4)]) == 1
        assert store.get("k000010")["score"] == 4 and len(store.rows()) == 40


def test_legacy_results_jsonl_is_imported_once(tmp_path):
    legacy = tmp_path / "results.jsonl"
    lines = [json.dumps(_row(i)) for i in range(40)]
    lines[10] = lines[10][:25]  # a damaged middle line
    legacy.write_text("\n".join(lines) + "\n" + '{"key": "torn", "sco')  # and a torn last line
    with ResultStore(tmp_path / "results.sqlite") as store:
        assert store.imported == 39 and store.repaired_bytes == len('{"key": "torn", "sco')
        assert any(f"{legacy} line 11 is damaged" in w for w in store.warnings), store.warnings
        assert store.missing(f"k{i:06d}" for i in range(40)) == {"k000010"}
    assert not legacy.exists() and (tmp_path / "results.jsonl.imported").exists()
    with ResultStore(tmp_path / "results.sqlite") as store:  # not imported again
        assert store.imported == 0 and len(store) == 39 and not store.warnings


def test_any_file_name_round_trips(tmp_path):
    """A name that is not UTF-8 (kept by Python as lone surrogates) and one with every kind of character."""
    odd = b"/clips/caf\xe9-\xff\xfe.mp4".decode("utf-8", "surrogateescape")
    names = [odd, "/clips/\u6f22\u5b57 \U0001f3a5 \"q'\n\t.mp4", "/clips/\x00nul.mp4"]
    with ResultStore(tmp_path) as store:
        store.append([_row(i, video=name) for i, name in enumerate(names)])
    assert row_text(_row(0, video=odd)).isascii()
    assert [r["video"] for r in read_store(tmp_path)] == names
    assert [r["video"] for r in read_store(tmp_path)][0].encode("utf-8", "surrogateescape") == (
        b"/clips/caf\xe9-\xff\xfe.mp4"
    )


def _writer(path: str, start: int) -> None:
    with ResultStore(path, lock=False) as store:
        for b in range(20):
            store.append([_row(start + b * 10 + j, raw_output="x" * 3000) for j in range(10)])


def test_parallel_writers_never_interleave(tmp_path):
    path = tmp_path / "results.sqlite"
    ResultStore(path).open()  # create it (the lock is released when the object goes)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), n * 1000)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = read_store(path)
    assert len(rows) == len({r["key"] for r in rows}) == 600
    assert all(r["raw_output"] == "x" * 3000 for r in rows)


def test_second_run_on_one_store_is_refused(tmp_path):
    from recipe_lib.errors import RecipeError

    with ResultStore(tmp_path / "results.sqlite"), pytest.raises(RecipeError, match="another run"):
        ResultStore(tmp_path / "results.sqlite").open()


def test_a_file_size_limit_mid_write_names_the_store_and_keeps_earlier_batches(tmp_path):
    """A real RLIMIT_FSIZE in a child process: the failing batch is rolled back whole, the error names the file."""
    code = f"""
import resource, sys, errno
from recipe_lib.inference.store import ResultStore
store = ResultStore({str(tmp_path / "results.sqlite")!r}); store.open()
store.append([{{"key": "first", "raw_output": "a"}}])
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    for b in range(1000):
        store.append([{{"key": f"b{{b}}-{{j}}", "raw_output": "x" * 4000}} for j in range(8)])
except OSError as exc:
    print(exc.errno == errno.EFBIG, exc.filename); store.close(); sys.exit(0)
sys.exit(1)
"""
    import subprocess
    import sys

    from support import REPO

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", str(tmp_path / "results.sqlite")]
    rows = read_store(tmp_path)
    assert rows[0]["key"] == "first"
    batches = {r["key"].split("-")[0] for r in rows[1:]}
    assert all(sum(1 for r in rows if r["key"].startswith(b + "-")) == 8 for b in batches)  # whole batches only


def _run(store: ResultStore, task: str, listed: list[tuple[str, str]], skips: list[dict] = ()) -> tuple[list, str]:
    """One run of ``task``: ``listed`` (key, input row text) in chunks of 7, as scoring lists its chunks, each
    chunk's skips after it (``skips`` in the first); (fresh flags, digest)."""
    store.start_run(task)
    fresh = []
    for i in range(0, max(len(listed), 1), 7):
        chunk = listed[i : i + 7]
        fresh += store.add_to_run(task, [k for k, _ in chunk], [item for _, item in chunk])
        store.add_skips(task, list(skips) if i == 0 else [])
    return fresh, store.finish_run(task)


def _order(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT task, seq, key, item FROM run_keys ORDER BY task, seq").fetchall()


def test_a_rerun_listing_the_same_clips_writes_no_order_and_keeps_its_digest(tmp_path):
    path = tmp_path / "results.sqlite"
    listed = [(f"k{i:06d}", json.dumps({"video_url": f"/c/{i}.mp4", "pc": 1 + i % 5})) for i in range(30)]
    with ResultStore(path) as store:
        store.append([_row(i) for i in range(30)])
        fresh, first = _run(store, "pc", listed + listed[:2], [{"video": "/c/x.mp4", "reason": "video not found"}])
        assert fresh == [True] * 30 + [False, False], "a key listed again in the same run is a duplicate"
        assert store.run_changed("pc")
    before = _order(path)
    with ResultStore(path) as store:
        changes = store.db.total_changes
        fresh, again = _run(store, "pc", listed + listed[:2], [{"video": "/c/x.mp4", "reason": "video not found"}])
        assert fresh == [True] * 30 + [False, False] and again == first
        assert not store.run_changed("pc") and store.db.total_changes == changes, "nothing written"
    assert _order(path) == before


@pytest.mark.parametrize(
    "change",
    ["label", "shorter", "longer", "reordered", "skip"],
)
def test_a_rerun_that_lists_anything_else_rewrites_the_order_from_the_first_difference(tmp_path, change):
    """The name and labels the exports show are this run's; positions past a shorter run are dropped; a key the old
    order held later may come earlier now (its unique index does not stand in the way)."""
    path = tmp_path / "results.sqlite"
    listed = [(f"k{i:06d}", json.dumps({"video_url": f"/c/{i}.mp4", "pc": 1})) for i in range(20)]
    skips = [{"video": "/c/x.mp4", "reason": "video not found"}]
    with ResultStore(path) as store:
        store.append([_row(i) for i in range(25)])
        _, first = _run(store, "pc", listed, skips)
    now = list(listed)
    if change == "label":
        now[12] = (now[12][0], json.dumps({"video_url": "/c/renamed.mp4", "pc": 5}))
    elif change == "shorter":
        now = now[:15]
    elif change == "longer":
        now += [(f"k{i:06d}", json.dumps({"video_url": f"/c/{i}.mp4"})) for i in range(20, 25)]
    elif change == "reordered":
        now[3], now[17] = now[17], now[3]
    with ResultStore(path) as store:
        _, digest = _run(store, "pc", now, [] if change == "skip" else skips)
        assert store.run_changed("pc") and digest != first
        rows = list(store.iter_run_rows("pc"))
        assert [r["key"] for r in rows] == [k for k, _ in now]
        assert [r["video"] for r in rows] == [json.loads(item)["video_url"] for _, item in now]
        assert [r["item"] for r in rows] == [json.loads(item) for _, item in now], "this run's input rows"
        assert list(store.iter_run_skips("pc")) == ([] if change == "skip" else skips)
        assert store.run_counts("pc") == (len(now), 0 if change == "skip" else 1)


def test_run_columns_read_in_sql_equal_the_rows(tmp_path):
    """What the collapse check and the metrics read from a large run's store, against the same rows in Python."""
    from recipe_lib.inference.record import score_columns
    from recipe_lib.inference.store import RunView

    path = tmp_path / "results.sqlite"
    rows = [_row(i, parse_error=None if i % 7 else "no digit", item={"pc": 1 + i % 5}) for i in range(40)]
    for r in rows[::7]:
        r["score"] = None
    listed = [(r["key"], json.dumps({"video_url": r["video"], "pc": None if i % 9 == 0 else 1 + i % 3}))
              for i, r in enumerate(rows)]  # fmt: skip
    with ResultStore(path) as store:
        store.append(rows)
        _run(store, "pc", listed)
        in_python = score_columns(list(store.iter_run_rows("pc")), "pc")
    view = RunView(path, "pc", "rows", len(rows))
    assert view.columns("pc") == in_python
    assert in_python["label"][:4] == [None, 2, 3, 1], "the labels this run listed, not the first run's"
    assert RunView(path, "pc", "rows", len(rows)).columns('we"ird') is None  # streamed in Python instead


def test_a_store_from_before_run_items_gains_the_column(tmp_path):
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE run_keys (task TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, PRIMARY KEY (task, "
            "seq)); INSERT INTO run_keys VALUES ('pc', 0, 'k000000');"
        )
    with ResultStore(path) as store:
        store.append([_row(0, item={"pc": 3})])
        assert [r["item"] for r in store.iter_run_rows("pc")] == [{"pc": 3}], "the row's own input row"
        _run(store, "pc", [("k000000", json.dumps({"video_url": "/c/0.mp4", "pc": 4}))])
        assert [r["item"]["pc"] for r in store.iter_run_rows("pc")] == [4]
