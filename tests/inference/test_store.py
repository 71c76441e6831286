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
