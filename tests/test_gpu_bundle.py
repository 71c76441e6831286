"""The GPU bundle (benchmarks/gpu_bundle.py): the resolver on real METADATA (tests/fixtures/metadata holds the header
part of real distributions' METADATA files, copied from installed wheels), the pieces (split, checked, joined,
extracted), the device-call plan and the session script's stage table. The real bundle, built from PyPI and checked
against the entry points' imports, is ``test_real_bundle_covers_the_entry_points`` (make test-all)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_bundle as gb  # noqa: E402

from recipe_lib.errors import RecipeError  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "metadata"


def real_metadata() -> dict[str, gb.Dist]:
    dists = [gb.Dist.from_metadata(p.read_text()) for p in sorted(FIXTURES.glob("*.METADATA"))]
    return {d.name: d for d in dists}


class FixtureIndex:
    """Fetch from the real METADATA fixtures, recording every request (as pip download would be asked)."""

    def __init__(self) -> None:
        self.dists = real_metadata()
        self.asked: list[tuple[str, str]] = []

    @property
    def pins(self) -> dict[str, str]:
        return {n: d.version for n, d in self.dists.items()}

    def __call__(self, wanted: list[tuple[str, str]]) -> dict[str, gb.Dist]:
        self.asked += wanted
        out = {}
        for name, version in wanted:
            dist = self.dists[name]
            assert dist.version == version
            out[name] = dist
        return out


def test_markers_and_extras_are_evaluated_for_the_target():
    index = FixtureIndex()
    closure = gb.resolve(["requests", "anyio"], index, index.pins, present={})
    assert set(closure.carried) == {
        "requests", "urllib3", "idna", "certifi", "charset-normalizer", "anyio", "typing-extensions"
    }  # fmt: skip
    # exceptiongroup is asked only below Python 3.11, pysocks / trio only with extras nobody asked for
    assert not {"exceptiongroup", "pysocks", "trio", "brotli"} & set(closure.asked_by)
    assert closure.asked_by["idna"] == {"requests", "anyio"}
    # the same roots for Python 3.15: anyio no longer asks for typing_extensions
    later = gb.resolve(["anyio"], index, index.pins, present={}, env={**gb.TARGET_ENV, "python_version": "3.15"})
    assert set(later.carried) == {"anyio", "idna"}


def test_an_extra_that_is_asked_for_is_followed():
    index = FixtureIndex()
    with pytest.raises(RecipeError, match=r"no pin .* for pysocks \(asked by requests\)"):
        gb.resolve(["requests[socks]"], index, index.pins, present={})
    # urllib3's brotli extra holds for CPython only: brotli, not brotlicffi
    with pytest.raises(RecipeError) as err:
        gb.resolve(["urllib3[brotli]"], index, index.pins, present={})
    assert err.value.message.endswith(" for brotli (asked by urllib3)")


def test_declared_packages_are_relied_on_unless_a_range_excludes_them():
    index = FixtureIndex()
    present = {"idna": "3.20", "certifi": None, "urllib3": "1.25.0", "typing-extensions": "4.16.0"}
    closure = gb.resolve(["requests", "anyio"], index, index.pins, present=present)
    assert set(closure.present) == {"idna", "certifi", "typing-extensions"}
    # requests asks urllib3>=1.26: the machine's 1.25 does not do, so the pinned 2.8.0 travels
    assert set(closure.carried) == {"requests", "urllib3", "charset-normalizer", "anyio"}
    assert closure.carried["urllib3"].version == "2.8.0"
    assert not {"idna", "certifi", "typing-extensions"} & {n for n, _ in index.asked}
    # a name in accept is relied on even outside the range
    accepted = gb.resolve(["requests"], index, index.pins, present=present, accept=["urllib3"])
    assert "urllib3" in accepted.present and "urllib3" not in accepted.carried


def test_a_cycle_through_extras_ends_and_each_dist_is_fetched_once():
    index = FixtureIndex()
    # math-verify[dev] asks math-verify[test] and math-verify[format]: itself again
    closure = gb.resolve(["math-verify[dev]"], index, index.pins, present={"pytest": "9.0", "ruff": None})
    assert set(closure.carried) == {"math-verify", "latex2sympy2-extended", "sympy", "mpmath", "antlr4-python3-runtime"}
    assert set(closure.present) == {"pytest", "ruff"}
    assert sorted(index.asked) == sorted(set(index.asked))


def test_extras_of_a_present_distribution_are_followed_from_its_metadata():
    index = FixtureIndex()
    present = {"latex2sympy2-extended": "1.11.0"}
    closure = gb.resolve(["latex2sympy2_extended[antlr4_13_2]"], index, index.pins, present=present)
    assert set(closure.present) == {"latex2sympy2-extended"}
    # the extra's requirement travels; the present distribution's own requirements (sympy) are its machine's business
    assert set(closure.carried) == {"antlr4-python3-runtime"}


def test_placeholders_are_substituted_and_dropped_names_are_not_followed():
    index = FixtureIndex()
    cosmos = index.dists["cosmos-rl"]
    from packaging.requirements import Requirement

    base = {gb.canon(Requirement(r).name) for r in cosmos.requires if Requirement(r).marker is None}
    assert {"zmq", "nvidia-nccl-cu12"} <= base
    # pybind11 is asked with its "global" extra, whose metadata is not among the fixtures: dropped here too
    present = {n: None for n in base - {"zmq", "nvidia-nccl-cu12", "pybind11"}} | {"pyzmq": "27.3.0"}
    drop = {"nvidia-nccl-cu12": "CUDA 12", "pybind11": "headers"}
    closure = gb.resolve(["cosmos-rl"], index, index.pins, present=present, drop=drop, substitute=gb.SUBSTITUTE)
    assert set(closure.carried) == {"cosmos-rl"}
    assert closure.asked_by["pyzmq"] == {"cosmos-rl"} and "zmq" not in closure.asked_by
    assert closure.dropped == drop


def test_a_pin_outside_an_asked_range_is_one_clear_error():
    index = FixtureIndex()
    with pytest.raises(RecipeError, match=r"urllib3==2\.8\.0 \(pinned\) is outside a range asked of it: <2 \(<root>\)"):
        gb.resolve(["requests", "urllib3<2"], index, index.pins, present={})


def test_roots_come_from_pyproject_without_the_notebook_only_ones():
    roots = gb.project_roots()
    names = {group: {gb.canon(re.split(r"[<>=!\[ ;]", r)[0]) for r in reqs} for group, reqs in roots.items()}
    assert {"transformers", "av", "datasets", "qwen-vl-utils", "toml"} <= names["project"]
    assert not gb.NOTEBOOK_ONLY & names["project"]
    assert "vllm" in names["vllm"] and "cosmos-rl" in names["cosmos"]
    pins = gb.read_pins()
    assert pins["vllm"] == "0.22.1" and pins["transformers"] == "4.57.6" and pins["cosmos-rl"] == "0.4.7"
    machine = gb.read_machine()
    assert machine["torch"] == "2.11.0+cu130" and machine["transformers"] == "5.17.0"


def test_declared_list_errors(tmp_path):
    bad = tmp_path / "machine.txt"
    bad.write_text("torch==2.11.0\ntorch >= 2\n")
    with pytest.raises(RecipeError, match=r"machine.txt:2: expected 'name' or 'name==version'"):
        gb.read_machine(bad)
    with pytest.raises(RecipeError, match="declared package list not found"):
        gb.read_machine(tmp_path / "absent.txt")


# ---------------------------------------------------------------- pieces


def built_pieces(tmp_path: Path, piece_bytes: int = 4000) -> tuple[Path, gb.Manifest, dict[str, Path]]:
    """Three real xz archives of random files, split into pieces of a few kB, with their manifest."""
    import random

    rng = random.Random(0)
    blobs, sources = [], {}
    for group in gb.GROUPS:
        src = tmp_path / "src" / group
        (src / group / "sub").mkdir(parents=True)
        for i in range(3):
            (src / group / "sub" / f"f{i}.bin").write_bytes(rng.randbytes(2500))
        (src / group / "__init__.py").write_text(f"NAME = {group!r}\n")
        blob = tmp_path / f"{group}.tar.xz"
        gb.pack(src, blob)
        blobs.append((group, blob, [{"name": group, "version": "1", "installed_bytes": 7500}]))
        sources[group] = src
    out = tmp_path / "gpu"
    out.mkdir()
    pieces, archives = gb.split(blobs, out, piece_bytes, tmp_path / "stream")
    m = gb.Manifest(piece_bytes, pieces, archives, {}, {}, {})
    gb.write_manifest(m, out)
    return out, m, sources


def stage(out: Path, stage_dir: Path, numbers: list[int]) -> None:
    stage_dir.mkdir(exist_ok=True)
    (stage_dir / "manifest.json").write_bytes((out / "manifest.json").read_bytes())
    for i in numbers:
        for f in (out / f"p{i}").iterdir():
            (stage_dir / f.name).write_bytes(f.read_bytes())


def test_pieces_join_and_unpack_archive_by_archive(tmp_path):
    out, m, sources = built_pieces(tmp_path)
    assert len(m.pieces) >= 3 and all(p.size <= m.piece_bytes for p in m.pieces)
    assert [a.group for a in m.archives] == list(gb.GROUPS)
    assert sum(p.size for p in m.pieces) == sum(a.size for a in m.archives)
    site, staged = tmp_path / "site", tmp_path / "stage"
    first = m.archives[0].complete_with_piece
    stage(out, staged, list(range(1, first + 1)))
    ready = gb.unpack(staged, site)
    assert ready == [g for g, a in zip(gb.GROUPS, m.archives) if a.complete_with_piece <= first]
    assert (site / "project" / "__init__.py").read_text() == "NAME = 'project'\n"
    assert not (site / "vllm").exists()
    stage(out, staged, list(range(first + 1, len(m.pieces) + 1)))
    assert gb.unpack(staged, site) == list(gb.GROUPS)
    for group, src in sources.items():
        for f in (src / group / "sub").iterdir():
            assert (site / group / "sub" / f.name).read_bytes() == f.read_bytes()
    assert gb.unpack(staged, site) == list(gb.GROUPS)  # again: nothing to do, nothing broken


def test_a_corrupt_or_missing_piece_is_named(tmp_path, capsys):
    out, m, _ = built_pieces(tmp_path)
    staged = tmp_path / "stage"
    stage(out, staged, list(range(1, len(m.pieces) + 1)))
    part = staged / "bundle.part2"
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    assert gb.main(["unpack", "--pieces", str(staged), "--into", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: piece bundle.part2 is corrupt: sha256 ") and m.pieces[1].sha256 in err[0]
    assert err[1] == "hint: carry .gpu/p2/bundle.part2 again" and len(err) == 2
    part.unlink()
    assert gb.main(["unpack", "--pieces", str(staged), "--into", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: piece bundle.part2 is missing while later pieces (bundle.part3")
    (staged / "manifest.json").unlink()
    assert gb.main(["unpack", "--pieces", str(staged), "--into", str(tmp_path / "site")]) == 2
    assert capsys.readouterr().err.startswith("error: manifest not found: ")


def test_no_gpu_is_one_clear_error(capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gb.main(["gpu-check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: no CUDA GPU visible (torch.cuda.is_available() is False)",
        "hint: run the GPU session on the GPU machine; on CPU use the tests",
    ]


def test_import_scan_counts_only_imports_that_run_at_import_time(tmp_path):
    src = tmp_path / "src"
    (src / "app" / "sub").mkdir(parents=True)
    (src / "nspkg" / "inner").mkdir(parents=True)  # a namespace package: no __init__.py
    (src / "nspkg" / "inner" / "mod.py").write_text("X = 1\n")
    (src / "app" / "__init__.py").write_text(
        "import json\n"
        "from . import sub\n"
        "from .sub import helper\n"
        "from nspkg.inner import mod\n"
        "import declared.deep\n"
        "try:\n    import optional_a\nexcept ImportError:\n    import fallback_b\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import typing_only\n"
        "if HAS_FAST:\n    import fast_path\n"
        "def later():\n    import inside_function\n"
        "class K:\n    import needed_by_class\n"
        "import contextlib\n"
        "with contextlib.suppress(ImportError):\n    import suppressed\n"
    )
    (src / "app" / "sub" / "__init__.py").write_text("from .. import sub as again\nfrom ..sub.gone import x\n")
    (src / "app" / "sub" / "helper.py").write_text("from app.sub import not_a_module_but_a_name\n")
    scan = gb.scan_imports(["app"], [src], present_tops={"declared"})
    # json: standard library; declared.deep: a declared distribution; the rest of the optional kinds are not counted
    assert scan.missing == {"needed_by_class": {"app"}, "app.sub.gone": {"app.sub"}}
    assert scan.modules == 6  # app, app.sub, app.sub.helper, nspkg, nspkg.inner, nspkg.inner.mod


# ---------------------------------------------------------------- the plan and the session script


def test_plan_fits_the_device_tool_and_checks_stage_needs(tmp_path):
    _, m, _ = built_pieces(tmp_path, piece_bytes=10**6)  # everything whole after piece 1
    calls = gb.plan(m)
    assert [c.number for c in calls] == [1, 2, 3, 4]
    assert all(len(c.command) <= gb.DEVICE_COMMAND_LIMIT for c in calls)
    assert calls[0].carry == [".gpu/p1"] and calls[0].groups_ready == list(gb.GROUPS)
    # each call stops starting stages when its own stages' time is spent, and the four fit one session's device time
    for c in calls:
        stages = sum(gb.STAGES[s][1] for s in gb.CALLS[c.number])
        assert c.command.startswith(f"CALL_LIMIT={c.seconds} ") and c.seconds == stages + gb.CALL_MARGIN_S
    assert gb.MACHINE_START_S + sum(c.seconds for c in calls) <= gb.DEVICE_BUDGET_S
    assert "fits a session's" in gb.render_plan(m, calls).splitlines()[-1]
    # the vllm archive whole only after piece 4, while call 3 runs vLLM stages: refused, naming both
    late = gb.Manifest(m.piece_bytes, m.pieces * 4, [*m.archives[:2], gb.Archive(**{
        **m.archives[2].__dict__, "complete_with_piece": 4})], {}, {}, {})  # fmt: skip
    late_call = r"device call 3 runs serve, which needs the archive vllm, whole only after"
    with pytest.raises(RecipeError, match=late_call):
        gb.plan(late)
    five = gb.Manifest(m.piece_bytes, m.pieces * 5, m.archives, {}, {}, {})
    with pytest.raises(RecipeError, match="the bundle has 5 pieces; the session runs in at most four calls"):
        gb.plan(five)


def test_session_script_knows_every_stage_of_every_call(tmp_path):
    script = (REPO / "benchmarks" / "gpu_session.sh").read_text()
    cases = set(re.findall(r"^  ([a-z0-9-]+)\)", script, flags=re.M))
    for stages in gb.CALLS.values():
        assert set(stages) <= cases
    assert set(gb.STAGES) <= cases and "bench" in cases
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_session.sh")], check=True)
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_bundle.py"), "stages", "2"], capture_output=True, text=True
    )
    assert out.returncode == 0
    rows = [line.split() for line in out.stdout.splitlines()]
    assert [r[0] for r in rows] == gb.CALLS[2] and all(int(r[1]) > 0 for r in rows)
    assert "cosmos" in rows[1][2].split(",")
    # every call's command line, as written in the script's header, is the one plan() gives
    _, m, _ = built_pieces(tmp_path, piece_bytes=10**6)
    for c in gb.plan(gb.Manifest(m.piece_bytes, m.pieces * 3, m.archives, {}, {}, {})):  # three, as built
        assert c.command in script and json.dumps(c.carry) in script


def test_a_session_call_unpacks_its_piece_then_stops_without_a_gpu(tmp_path):
    """``gpu_session.sh call N`` as the device runs it, on this CPU machine: the piece is checked and the whole
    archives extracted, then the missing GPU is one error line and exit status 2; a corrupt piece stops it earlier."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out, m, _ = built_pieces(tmp_path, piece_bytes=12000)
    env = {**os.environ, "GPU_PIECES": str(out), "GPU_WORK": str(tmp_path / "w"), "GPU_SITE": str(tmp_path / "site")}
    env |= {"GPU_STAGE": str(tmp_path / "stage"), "OUT": str(tmp_path / "out"), "GPU_PYTHON": sys.executable}
    script = str(REPO / "benchmarks" / "gpu_session.sh")
    run = subprocess.run(["bash", script, "call", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    first = [a.group for a in m.archives if a.complete_with_piece == 1]
    assert first and f"archives ready: {' '.join(first)}" in run.stdout
    assert "error: no CUDA GPU visible" in run.stdout
    assert (tmp_path / "site" / first[0] / "__init__.py").is_file()
    assert (tmp_path / "out" / "call1.log").read_text().count("error:") == 1
    (tmp_path / "stage" / "bundle.part1").write_bytes(b"not the piece")
    run = subprocess.run(["bash", script, "call", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "error: piece bundle.part1 is corrupt" in run.stdout


# ---------------------------------------------------------------- the real bundle (make test-all)


def test_real_bundle_covers_the_entry_points(tmp_path):
    """Build the real bundle from PyPI and Debian, join and unpack its pieces, and walk the imports the entry points
    run at import time (``gpu_bundle.scan_imports``: what it cannot see is in its docstring): each resolves inside the
    bundle, this checkout, the standard library or a declared distribution of the GPU machine."""
    local = REPO / ".gpu"
    wheels = local / "wheels" if (local / "wheels").is_dir() else None
    cache = local / "cache" if (local / "cache").is_dir() else None
    out = tmp_path / "gpu"
    out.mkdir()
    m = gb.build(out, gb.PIECE_MIB, gb.MACHINE, gb.CONSTRAINTS, wheel_dir=wheels, cache=cache)
    assert 2 <= len(m.pieces) <= 4 and all(p.size <= gb.PIECE_MIB * gb.MIB for p in m.pieces)
    gb.render_plan(m, gb.plan(m))  # each call: command <= 2000 characters, checkout + piece <= 64 MiB
    staged = tmp_path / "stage"
    stage(out, staged, list(range(1, len(m.pieces) + 1)))
    site = tmp_path / "site"
    assert gb.unpack(staged, site) == list(gb.GROUPS)
    carried = {p["name"]: p["version"] for a in m.archives for p in a.packages}
    # what stopped `vllm serve` and FP8 one module at a time before the list was computed
    once_missing = ["uvicorn", "watchfiles", "httptools", "python-multipart", "model-hosting-container-standards"]
    once_missing += ["supervisor", "jmespath", "ijson", "compressed-tensors", "loguru", "humming-kernels", "pyelftools"]
    assert [n for n in once_missing if n not in carried] == []
    assert carried["vllm"] == "0.22.1" and carried["transformers"] == "4.57.6" and carried["cosmos-rl"] == "0.4.7"
    assert "torch" not in carried and "torch" in m.present
    assert (site / "redis-server" / "bin" / "redis-server").is_file() and (site / "bin" / "cosmos-rl").is_file()
    assert (site / "bin" / "cosmos-rl").read_text().startswith("#!/usr/bin/env python3\n")
    scan = gb.scan_imports(gb.ENTRY_MODULES, [site, REPO], gb.present_top_modules(gb.read_machine()))
    assert scan.modules > 500
    assert not scan.missing, sorted(scan.missing.items())[:20]
