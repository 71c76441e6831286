"""The offline bundle for the GPU machine: what vLLM (``vllm serve``, FP8), cosmos-rl and ``recipe_lib`` need there
and the machine lacks, as pieces that each fit one transfer.

    python benchmarks/gpu_bundle.py build [--out .gpu] [--piece-mib 48]     # here, with network (make gpu-bundle)
    python benchmarks/gpu_bundle.py plan [--out .gpu]                       # the device calls, ready to paste
    python benchmarks/gpu_bundle.py unpack --pieces DIR --into DIR          # there: check, join, extract what is whole
    python benchmarks/gpu_bundle.py gpu-check                               # there: one clear error without a GPU

A script under ``benchmarks/`` rather than a ``plausibility`` command: it serves the project's own GPU sessions
(``benchmarks/gpu_session.sh``), needs pip and a network, and has no place in what a user of the recipes runs.

What travels is computed, not typed. The roots are the project's run-time requirements (``pyproject.toml``: the
dependencies, less the notebook-only ones, plus the ``gpu`` and ``cosmos`` extras); every version comes from
``constraints-gpu.txt``. Each needed wheel is downloaded for CPython 3.12 on manylinux x86-64 (``pip download
--no-deps``) and its ``Requires-Dist`` lines are followed, markers evaluated for that machine and for the extras asked
for. A distribution the machine already has (``benchmarks/gpu-machine-packages.txt``) is not carried while its
version satisfies every range asked of it (transformers 5.17 fails ``<4.58``, so 4.57.6 travels; torch 2.11.0
satisfies ``==2.11.0``, so it stays). The wheels are installed into ``site/`` with pip (``--target``, no compile),
slimmed, and packed as three archives in the order the session needs them — ``project`` (the scorer, in-process
training), ``cosmos`` (cosmos-rl and a ``redis-server`` unpacked from Debian packages), ``vllm`` — whose bytes are
concatenated and cut into pieces of at most ``--piece-mib``. ``unpack`` extracts every archive whose bytes are all
present, so a call can use the first archives before the last piece has arrived.

Left out (``DROP``: never downloaded, nor what only they need) and cut (``CUT``: files removed after install), each
with its reason below. ``tests/test_gpu_bundle.py`` checks the resolver on real METADATA and, in ``make test-all``,
that every module the three entry points import at import time resolves inside the bundle or the declared packages.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from email.parser import HeaderParser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from recipe_lib.errors import RecipeError  # noqa: E402

MACHINE = REPO / "benchmarks" / "gpu-machine-packages.txt"
CONSTRAINTS = REPO / "constraints-gpu.txt"
PYPROJECT = REPO / "pyproject.toml"
MIB = 1 << 20
# Largest piece: a call carries the checkout (about 2 MiB) and one piece, 64 MiB in all. 58 leaves room for the
# checkout to grow, and puts the whole bundle (about 172 MiB: project 31, cosmos 26, vllm 115) in three pieces, so the
# vLLM archive is whole by the third call; with 48 it would be whole only after a fourth piece.
PIECE_MIB = 58.0
DEVICE_COMMAND_LIMIT = 2000  # characters the device tool takes for one command
TRANSFER_LIMIT = 64 * MIB  # checkout + carried folders, one call
DEVICE_BUDGET_S = 1800  # device time of one session, the machine's start and every call included
MACHINE_START_S = 120  # a machine's start as measured (60-120 s); a start that fails costs 90-105 s more
CALL_MARGIN_S = 30  # a call's own steps besides its stages: copying and checking the piece, extracting

# The machine: CPython 3.12 on Linux x86-64 (PEP 508 marker values).
TARGET_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "implementation_version": "3.12.3",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "platform_release": "",
    "platform_version": "",
    "sys_platform": "linux",
    "os_name": "posix",
}
PLATFORMS = ["manylinux2014_x86_64", "manylinux1_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in range(5, 40)]
PIP_TARGET = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none"]
PIP_TARGET += [arg for p in PLATFORMS + ["any"] for arg in ("--platform", p)]

# Project requirements that only the notebooks and their HTML export use; the GPU session runs none of them.
NOTEBOOK_ONLY = {"papermill", "jupyter-client", "traitlets", "ipykernel", "nbformat", "nbconvert"}

# Distributions never carried, with the reason; what only they require is not carried either.
DROP = {
    "flashinfer-python": "vLLM picks FlashAttention 3 on Hopper; its sampler falls back to PyTorch with "
    "VLLM_USE_FLASHINFER_SAMPLER=0 (the session sets it); imported only when selected",
    "flashinfer-cubin": "prebuilt kernels for flashinfer, which is left out",
    "nvidia-nccl-cu12": "cosmos-rl asks for CUDA 12's NCCL; torch 2.11.0+cu130 loads nvidia-nccl-cu13, present there",
    "xgrammar": "structured outputs only (45 MB); vLLM imports it lazily when a request asks for a grammar",
    "nvidia-cutlass-dsl": "CuTe DSL kernels for Blackwell attention and quantisation paths, imported when selected",
    "quack-kernels": "CuTe DSL kernels (Blackwell), imported when selected",
    "tilelang": "kernel compiler for other models' MLA / sparse attention, imported when selected",
    "tokenspeed-mla": "MLA kernels (DeepSeek-style models only)",
    "tokenspeed-triton": "a second Triton build for tokenspeed-mla, left out with it",
    "cuda-tile": "tile kernels for Blackwell, imported when selected",
    "modelscope": "cosmos-rl downloads from ModelScope only when asked (COSMOS_USE_MODELSCOPE); local paths here",
    "torch-c-dlpack-ext": "a faster DLPack bridge for apache-tvm-ffi, optional at run time",
    "nvidia-cuda-nvcc": "CUDA's compiler (with nvvm and crt, 300 MB), asked by humming-kernels[cu13] for kernels it "
    "compiles on first use; vLLM's FP8 on Qwen2.5-VL ran with humming-kernels and without them (H100, 2026-12-07)",
    "nvidia-cuda-cccl": "CUDA C++ headers, for the same compiles as nvidia-cuda-nvcc",
}
# Declared distributions relied on although a requirement's range excludes their version, with the evidence.
ACCEPT = {
    "numba": "vLLM 0.22.1 asks ==0.65.0; it ran with the machine's 0.68.0 (H200 2026-12-01, H100 2026-12-07), and "
    "0.65 would also need the llvmlite it was built against",
    "setuptools": "vLLM 0.22.1 asks <81 on Python 3.12; it ran with the machine's 81.0.0 on the same dates",
    "numpy": "mistral-common asks <2.4 on Python 3.12; the machine's torch, pandas, scipy and opencv run on its 2.5.2, "
    "and vLLM 0.22.1 ran with it on the same dates: an older numpy is not put under them",
}
# Requirements on placeholder names: `zmq` on PyPI is an sdist whose whole content is a dependency on pyzmq.
SUBSTITUTE = {"zmq": "pyzmq"}
# Files removed from the installed tree (paths relative to site/), with the reason.
CUT = {
    "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so": "FlashAttention 2 kernels: on an H100/H200 vLLM uses FlashAttention 3",
    "vllm/vllm-rs": "the Rust front-end binary (`vllm-rs`), not used by `vllm serve` or the Python API",
    "vllm/_moe_C.abi3.so": "fused mixture-of-experts kernels (Qwen2.5-VL is dense); vLLM imports it inside try/except "
    "and ran without it (H200 2026-12-01, H100 2026-12-07)",
}
CUT_GLOBS = {
    "vllm/third_party/deep_gemm/_C.cpython-3*": "DeepGEMM builds for Pythons other than 3.12",
    "mistral_common/data/tekken_*.json": "Mistral models' tokenizer files (34 MB); the Qwen critics never read them",
    "pycountry/locales/*": "country-name translations (20 MB); pydantic-extra-types' country types need no locale",
}
KEEP_GLOB_SUFFIX = "cpython-312-"
# xgrammar is dropped, but vLLM's modules name its classes when they are defined: a stand-in that raises on use.
XGRAMMAR_STAND_IN = '''"""Stand-in for xgrammar, which the GPU bundle leaves out (benchmarks/gpu_bundle.py)."""

__version__ = "0.0.0+absent"


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def absent(*args, **kwargs):
        raise ImportError("xgrammar is not in the GPU bundle: structured outputs through xgrammar are unavailable")

    return type(name, (), {"__init__": absent, "__init_subclass__": classmethod(lambda cls, **kw: None)})
'''

# Archives in the order the GPU session needs them, each with the requirement roots it serves.
GROUPS = ("project", "cosmos", "vllm")

# Stages of benchmarks/gpu_session.sh: the archives each needs and the seconds it may take at most (its timeout).
STAGES = {
    "check": (("project",), 60),
    "bench-hf": (("project",), 150),
    "train-7b": (("project",), 420),
    "cosmos-demo": (("project", "cosmos"), 170),
    "cosmos-7b": (("project", "cosmos"), 220),
    "cosmos-grpo": (("project", "cosmos"), 100),
    "agree": (("project", "cosmos", "vllm"), 260),  # the vllm archive leaves out what the earlier ones hold
    "bench-vllm": (("project", "cosmos", "vllm"), 200),
    "serve": (("project", "cosmos", "vllm"), 330),
    "bench-gpu": (("project", "cosmos", "vllm"), 420),  # benchmarks/bench_gpu.py: both backends, agreement, fp8
}
# Which stages each device call runs, in order (the call's pieces must make their archives whole). With every stage
# run to its timeout and the machine's start, the four calls fit a session's 30 minutes of device time (`plan` prints
# the sum), in order of need: fine-tuning, cosmos-rl, serve, then the speed benchmark. Only the first call runs
# `check` (the demo critic and clips it makes stay in /tmp while the machine is held; every call checks the GPU and
# its piece before its stages). bench-gpu measures the bf16-vs-vLLM agreement and both backends' rows in one run, so
# agree / bench-vllm / bench-hf / cosmos-demo stay available as single stages.
# GPU_CALL_STAGES="name[:seconds] ..." replaces a call's list (e.g. to rerun one stage in the same lease).
CALLS = {
    1: ["check", "train-7b"],
    2: ["cosmos-7b", "cosmos-grpo"],
    3: ["serve"],
    4: ["bench-gpu"],
}


def canon(name: str) -> str:
    """PEP 503 normalised name."""
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


# ---------------------------------------------------------------- inputs


def _listed(path: Path, pattern: str, expected: str) -> Iterator[re.Match[str]]:
    """The match of ``pattern`` with each line of ``path`` that is not blank once its ``#`` comment is cut; a line that
    does not match is an error saying the ``expected`` form."""
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(pattern, line)
        if not m:
            raise RecipeError(f"{path}:{n}: expected {expected}, got {line!r}")
        yield m


def read_machine(path: Path = MACHINE) -> dict[str, str | None]:
    """Declared distributions of the GPU machine: canonical name -> version (None where only the name is known)."""
    if not path.is_file():
        raise RecipeError(f"declared package list not found: {path}", hint="benchmarks/gpu-machine-packages.txt")
    lines = _listed(path, r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*(\S+))?", "'name' or 'name==version'")
    return {canon(m[1]): m[2] for m in lines}


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """``name==version`` lines of a constraints file: canonical name -> version."""
    if not path.is_file():
        raise RecipeError(f"constraints file not found: {path}")
    lines = _listed(path, r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)", "'name==version'")
    return {canon(m[1]): m[2] for m in lines}


def project_roots(path: Path = PYPROJECT) -> dict[str, list[str]]:
    """Requirement strings per archive: ``project`` = run-time dependencies less :data:`NOTEBOOK_ONLY`, ``cosmos``
    and ``vllm`` = the ``cosmos`` and ``gpu`` extras."""
    from packaging.requirements import Requirement

    meta = tomllib.loads(path.read_text())["project"]
    deps = [r for r in meta["dependencies"] if canon(Requirement(r).name) not in NOTEBOOK_ONLY]
    extras = meta.get("optional-dependencies", {})
    return {"project": deps, "cosmos": list(extras.get("cosmos", [])), "vllm": list(extras.get("gpu", []))}


# ---------------------------------------------------------------- metadata and the closure


@dataclass(frozen=True)
class Dist:
    """One distribution's name, version and ``Requires-Dist`` lines, read from its METADATA."""

    name: str
    version: str
    requires: tuple[str, ...]
    wheel: str = ""

    @classmethod
    def from_metadata(cls, text: str, wheel: str = "") -> Dist:
        msg = HeaderParser().parsestr(text)
        return cls(canon(msg["Name"]), msg["Version"], tuple(msg.get_all("Requires-Dist") or ()), wheel)

    @classmethod
    def from_wheel(cls, path: Path) -> Dist:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                raise RecipeError(f"{path.name}: not a wheel (no single *.dist-info/METADATA)")
            return cls.from_metadata(zf.read(names[0]).decode("utf-8"), path.name)


@dataclass
class Closure:
    """What the machine needs: carried distributions, declared ones relied on, dropped ones, and who asked."""

    carried: dict[str, Dist] = field(default_factory=dict)
    present: dict[str, str | None] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    asked_by: dict[str, set[str]] = field(default_factory=dict)


Fetch = Callable[[list[tuple[str, str]]], dict[str, Dist]]


def resolve(
    roots: Iterable[str],
    fetch: Fetch,
    pins: dict[str, str],
    present: dict[str, str | None],
    drop: dict[str, str] | None = None,
    substitute: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    accept: Iterable[str] = (),
) -> Closure:
    """The run-time closure of ``roots`` for the target ``env``.

    ``fetch([(name, version), ...])`` returns each distribution's :class:`Dist`. A requirement is followed when its
    marker holds for the target and for one of the extras asked of its requirer. A declared-present distribution is
    relied on while its declared version (None: unknown, taken to satisfy) is in every range asked of it; otherwise it
    is carried at its pin; a name in ``accept`` is relied on whatever the ranges. Extras asked of a present
    distribution are followed from its pinned metadata. Every carried version must be pinned and satisfy every range
    asked of it. Each distribution is fetched once, so cycles (through extras too) end.
    """
    from packaging.requirements import Requirement
    from packaging.version import Version

    drop, substitute, env = drop or {}, substitute or {}, env or TARGET_ENV
    substitute = {canon(k): v for k, v in substitute.items()}
    drop = {canon(k): v for k, v in drop.items()}
    accept = {canon(n) for n in accept}
    out = Closure()
    ranges: dict[str, list[tuple[object, str]]] = {}
    extras: dict[str, set[str]] = {}
    walked: dict[str, set[str]] = {}  # extras whose requirements have been followed, per distribution
    metadata: dict[str, Dist] = {}
    pending = [(Requirement(r), "<root>") for r in roots]

    def fits(name: str, version: str | None) -> bool:
        if name in accept and name in present and version == present[name]:
            return True
        return version is None or all(spec.contains(Version(version), prereleases=True) for spec, _ in ranges[name])

    while pending:
        touched: set[str] = set()
        for req, by in pending:
            name = canon(substitute.get(canon(req.name), req.name))
            if name in drop:
                out.dropped[name] = drop[name]
                out.asked_by.setdefault(name, set()).add(by)
                continue
            ranges.setdefault(name, []).append((req.specifier, by))
            extras.setdefault(name, set()).update(req.extras)
            out.asked_by.setdefault(name, set()).add(by)
            touched.add(name)
        pending = []
        for name in sorted(touched):
            if name in present and name not in out.carried and not fits(name, present[name]):
                out.present.pop(name, None)
            if name in present and name not in out.carried and fits(name, present[name]):
                out.present[name] = present[name]
        need = sorted(
            n for n in touched if n not in metadata and (n not in out.present or extras[n] - walked.get(n, set()))
        )
        missing = [n for n in need if n not in pins]
        if missing:
            who = "; ".join(f"{n} (asked by {', '.join(sorted(out.asked_by[n]))})" for n in missing)
            raise RecipeError(
                f"no pin in {CONSTRAINTS.name} for {who}",
                hint="pin each at the version pip resolves for the GPU set (make gpu-resolve), or add it to the "
                "declared machine packages or to DROP in benchmarks/gpu_bundle.py with a reason",
            )
        metadata.update(fetch([(n, pins[n]) for n in need]) if need else {})
        for name in sorted(touched):
            dist = metadata.get(name)
            if name not in out.present:
                if dist is None:
                    continue
                if not fits(name, dist.version):
                    asked = ", ".join(f"{spec or 'any'} ({by})" for spec, by in ranges[name])
                    raise RecipeError(
                        f"{name}=={dist.version} (pinned) is outside a range asked of it: {asked}",
                        hint=f"re-pin {name} in {CONSTRAINTS.name}",
                    )
                out.carried[name] = dist
            if dist is None:
                continue
            # present: only the requirements of the extras asked of it; carried: the base ones too
            want = set(extras[name]) | ({""} if name in out.carried else set())
            new = want - walked.get(name, set())
            if not new:
                continue
            walked.setdefault(name, set()).update(new)
            for line in dist.requires:
                req = Requirement(line)
                if req.marker is None:
                    hit = "" in new
                else:
                    hit = any(req.marker.evaluate({**env, "extra": e}) for e in new)
                if hit:
                    pending.append((req, name))
    return out


def pip_fetch(wheel_dir: Path) -> Fetch:
    """Download each pinned wheel for the target (one ``pip download --no-deps`` per batch) and read its METADATA."""
    from packaging.version import Version

    wheel_dir.mkdir(parents=True, exist_ok=True)

    def find(name: str, version: str) -> Path | None:
        stem = re.sub(r"[-_.]+", "_", name).lower()
        for path in wheel_dir.glob("*.whl"):
            parts = path.name.split("-")
            if re.sub(r"[-_.]+", "_", parts[0]).lower() == stem and Version(parts[1]) == Version(version):
                return path
        return None

    def fetch(wanted: list[tuple[str, str]]) -> dict[str, Dist]:
        todo = [f"{n}=={v}" for n, v in wanted if find(n, v) is None]
        if todo:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", *PIP_TARGET]
            proc = subprocess.run([*cmd, "-d", str(wheel_dir), *todo], capture_output=True, text=True)
            if proc.returncode:
                err = [x for x in proc.stderr.splitlines() if x.startswith("ERROR")] or proc.stderr.splitlines()[-3:]
                raise RecipeError(f"pip could not download {' '.join(todo)}: {' '.join(err)}")
        out = {}
        for n, v in wanted:
            path = find(n, v)
            if path is None:
                raise RecipeError(f"no wheel of {n}=={v} for CPython 3.12 manylinux x86-64 in {wheel_dir}")
            out[n] = Dist.from_wheel(path)
        return out

    return fetch


# ---------------------------------------------------------------- build


@dataclass
class Piece:
    name: str
    size: int
    sha256: str


@dataclass
class Archive:
    group: str
    file: str
    size: int
    sha256: str
    start: int  # byte offset in the concatenation of the pieces
    complete_with_piece: int  # 1-based: the first piece after which the archive is whole
    packages: list[dict[str, object]]


@dataclass
class Manifest:
    piece_bytes: int
    pieces: list[Piece]
    archives: list[Archive]
    present: dict[str, str | None]
    dropped: dict[str, str]
    cut: dict[str, str]
    accepted: dict[str, str] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.is_file():
            raise RecipeError(f"manifest not found: {path}", hint="carry the first piece's folder (it holds it)")
        raw = json.loads(path.read_text())
        return cls(
            raw["piece_bytes"],
            [Piece(**p) for p in raw["pieces"]],
            [Archive(**a) for a in raw["archives"]],
            raw["present"],
            raw["dropped"],
            raw["cut"],
            raw.get("accepted", {}),
        )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def install(wheels: list[Path], site: Path) -> None:
    """pip's own installer, into ``site`` for the target (scripts' first lines then name ``python3`` on PATH)."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile"]
    cmd += ["--only-binary=:all:", *PIP_TARGET, "--target", str(site)]
    proc = subprocess.run([*cmd, *map(str, wheels)], capture_output=True, text=True)
    if proc.returncode:
        raise RecipeError(f"pip install --target {site} failed: {proc.stderr.strip().splitlines()[-1:]}")
    for script in (site / "bin").glob("*") if (site / "bin").is_dir() else []:
        head = script.read_bytes()[:256]
        if head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]:
            body = script.read_bytes().split(b"\n", 1)[1]
            script.write_bytes(b"#!/usr/bin/env python3\n" + body)


def slim(site: Path) -> dict[str, str]:
    """Remove :data:`CUT` files and add the xgrammar stand-in; returns what was cut (path -> reason)."""
    done = {}
    for rel, why in CUT.items():
        if (site / rel).exists():
            (site / rel).unlink()
            done[rel] = why
    for pattern, why in CUT_GLOBS.items():
        for path in site.glob(pattern):
            if KEEP_GLOB_SUFFIX not in path.name:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                done[str(path.relative_to(site))] = why
    if "xgrammar" in DROP and (site / "vllm").is_dir():
        (site / "xgrammar").mkdir(exist_ok=True)
        (site / "xgrammar" / "__init__.py").write_text(XGRAMMAR_STAND_IN)
        # `vllm serve` imports xgrammar.structural_tag when its app starts (seen on an H100, 2026-12-07): the same
        # stand-in serves as that submodule.
        (site / "xgrammar" / "structural_tag.py").write_text(XGRAMMAR_STAND_IN)
        done["xgrammar/__init__.py"] = "stand-in for the dropped xgrammar (raises on use)"
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return done


def redis_server(work: Path, dest: Path) -> None:
    """``redis-server`` (and redis-cli) with the two libraries they load, from Debian packages unpacked with
    ``dpkg -x`` into ``work`` (never installed): ``dest/bin``, ``dest/lib``."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise RecipeError(f"{tool} not found: redis-server is taken from Debian packages", hint="build on Debian")
    proc = subprocess.run(
        ["apt-get", "download", "redis-tools", "libjemalloc2", "liblzf1"], cwd=debs, capture_output=True, text=True
    )
    if proc.returncode:
        raise RecipeError(f"apt-get download failed: {proc.stderr.strip()[-300:]}", hint="run apt-get update first")
    root = work / "x"
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    (dest / "lib").mkdir(parents=True, exist_ok=True)
    # redis-tools ships one binary that acts by the name it is started under
    shutil.copy2(root / "usr/bin/redis-check-rdb", dest / "bin/redis-server")
    shutil.copy2(root / "usr/bin/redis-cli", dest / "bin/redis-cli")
    for lib in ("libjemalloc.so.2", "liblzf.so.1"):
        shutil.copy2((root / "usr/lib/x86_64-linux-gnu" / lib).resolve(), dest / "lib" / lib)
    check = subprocess.run(
        [str(dest / "bin/redis-server"), "--version"],
        env={**os.environ, "LD_LIBRARY_PATH": str(dest / "lib")},
        capture_output=True,
        text=True,
    )
    if check.returncode:
        raise RecipeError(f"the unpacked redis-server does not start: {check.stderr.strip()[-200:]}")


def pack(site: Path, out: Path) -> None:
    """``site``'s files in an xz tarball, files sorted, owners and times fixed (same input, same bytes); xz itself
    compresses, on every core (its multi-block output is plain .xz, which Python's tarfile reads there)."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    plain = out.with_suffix("")
    with tarfile.open(plain, "w") as tar:
        for path in sorted(site.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                continue
            tar.add(path, arcname=str(path.relative_to(site)), recursive=False, filter=clean)
    if shutil.which("xz") is None:
        raise RecipeError("xz not found", hint="install xz-utils")
    with out.open("wb") as f:
        subprocess.run(["xz", "-T0", "-6", "-c", str(plain)], stdout=f, check=True)
    plain.unlink()


def cache_key(group: str, site: Path) -> str:
    """What an archive holds: every file's path, size and mode under ``site`` (after slimming), so a packed archive
    is reused only for the same tree."""
    h = hashlib.sha256(group.encode())
    for path in sorted(site.rglob("*")):
        if path.is_file() or path.is_symlink():
            st = path.lstat()
            h.update(f"{path.relative_to(site)}:{st.st_size}:{st.st_mode}\n".encode())
    return h.hexdigest()[:16]


def build(
    out: Path,
    piece_mib: float,
    machine: Path,
    constraints: Path,
    wheel_dir: Path | None = None,
    cache: Path | None = None,
) -> Manifest:
    """Resolve, download, install, slim, pack and split (see the module docstring)."""
    if piece_mib <= 0 or piece_mib * MIB > TRANSFER_LIMIT:
        raise RecipeError(f"--piece-mib must be in (0, 64], got {piece_mib}", hint="a transfer holds 64 MiB in all")
    pins, present = read_pins(constraints), read_machine(machine)
    roots = project_roots()
    wheel_dir = wheel_dir or out / "wheels"
    fetch = pip_fetch(wheel_dir)
    closures, seen = {}, set()
    acc: list[str] = []
    for group in GROUPS:
        acc += roots[group]
        closures[group] = resolve(acc, fetch, pins, present, DROP, SUBSTITUTE, accept=ACCEPT)
    last = closures[GROUPS[-1]]
    work = Path(tempfile.mkdtemp(prefix="gpu-bundle-", dir=out))
    archives: list[Archive] = []
    cut: dict[str, str] = {}
    try:
        blobs = []
        for group in GROUPS:
            names = sorted(set(closures[group].carried) - seen)
            seen |= set(names)
            site = work / group / "site"
            site.mkdir(parents=True)
            wheels = [wheel_dir / last.carried[n].wheel for n in names]
            install(wheels, site)
            cut_here = slim(site)
            for rel, why in cut_here.items():  # the manifest names each rule once, with what it removed
                rule = next((g for g in CUT_GLOBS if fnmatch.fnmatch(rel, g)), rel)
                cut[rule] = f"{why} ({sum(fnmatch.fnmatch(r, rule) for r in cut_here)} paths)" if rule != rel else why
            if group == "cosmos":
                redis_server(work / "redis-work", site / "redis-server")  # beside redis-py's package ``redis``
            # packing is the slow part (xz over ~1 GB): an archive made from the same wheels and rules is reused
            blob = (cache or out / "cache") / f"{group}-{cache_key(group, site)}.tar.xz"
            if not blob.is_file():
                blob.parent.mkdir(exist_ok=True)
                pack(site, work / blob.name)
                shutil.move(work / blob.name, blob)
            packages = [
                {"name": n, "version": last.carried[n].version, "installed_bytes": dist_bytes(site, n)} for n in names
            ]
            if group == "cosmos":
                server = tree_size(site / "redis-server")
                packages.append({"name": "redis-server", "version": "debian", "installed_bytes": server})
            blobs.append((group, blob, packages))
        pieces, archives = split(blobs, out, int(piece_mib * MIB), work / "stream")
        piece_bytes = int(piece_mib * MIB)
        accepted = {n: why for n, why in ACCEPT.items() if n in last.present}
        present = dict(sorted(last.present.items()))
        manifest = Manifest(piece_bytes, pieces, archives, present, last.dropped, cut, accepted)
        write_manifest(manifest, out)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_manifest(m: Manifest, out: Path) -> None:
    """``out/manifest.json`` and ``out/SHA256SUMS``, copied into each piece's folder (any piece can be checked)."""
    m.save(out / "manifest.json")
    sums = [f"{p.sha256}  {p.name}\n" for p in m.pieces] + [f"{a.sha256}  {a.file}\n" for a in m.archives]
    (out / "SHA256SUMS").write_text("".join(sums))
    for i in range(1, len(m.pieces) + 1):
        shutil.copy2(out / "manifest.json", out / f"p{i}" / "manifest.json")
        shutil.copy2(out / "SHA256SUMS", out / f"p{i}" / "SHA256SUMS")


def split(
    blobs: list[tuple[str, Path, list[dict[str, object]]]], out: Path, piece_bytes: int, stream: Path
) -> tuple[list[Piece], list[Archive]]:
    """Concatenate the archives in order and cut the bytes into ``out/p1/bundle.part1``, ``out/p2/...``."""
    for old in out.glob("p[0-9]*"):
        shutil.rmtree(old)
    archives, offset = [], 0
    with stream.open("wb") as s:
        for group, blob, packages in blobs:
            size = blob.stat().st_size
            whole = -(-(offset + size) // piece_bytes)
            archives.append(Archive(group, blob.name, size, sha256(blob), offset, whole, packages))
            with blob.open("rb") as f:
                shutil.copyfileobj(f, s)
            offset += size
    pieces = []
    with stream.open("rb") as s:
        for i in range(1, -(-offset // piece_bytes) + 1):
            (out / f"p{i}").mkdir(parents=True)
            part = out / f"p{i}" / f"bundle.part{i}"
            part.write_bytes(s.read(piece_bytes))
            pieces.append(Piece(part.name, part.stat().st_size, sha256(part)))
    stream.unlink()
    return pieces, archives


def dist_bytes(site: Path, name: str) -> int:
    """Installed size of one distribution, from its RECORD (files still present after slimming)."""
    for info in site.glob("*.dist-info"):
        if canon(info.name.removesuffix(".dist-info").rsplit("-", 1)[0]) == name and (info / "RECORD").is_file():
            total = 0
            for row in (info / "RECORD").read_text().splitlines():
                path = site / row.split(",", 1)[0]
                if path.is_file():
                    total += path.stat().st_size
            return total
    return 0


def describe(m: Manifest) -> str:
    lines = []
    for a in m.archives:
        lines.append(f"archive {a.file}: {a.size / MIB:.1f} MiB, whole after piece {a.complete_with_piece}")
        for p in sorted(a.packages, key=lambda p: -int(p["installed_bytes"])):
            lines.append(f"  {p['name']:<34} {p['version']:<22} {int(p['installed_bytes']) / MIB:8.1f} MiB installed")
    for p in m.pieces:
        lines.append(f"piece {p.name}: {p.size} bytes ({p.size / MIB:.1f} MiB) sha256 {p.sha256}")
    lines.append(f"dropped: {', '.join(sorted(m.dropped))}")
    lines.append(f"relied on, declared present: {len(m.present)} distributions")
    return "\n".join(lines)


# ---------------------------------------------------------------- on the GPU machine


def unpack(pieces: Path, into: Path) -> list[str]:
    """Check the pieces in ``pieces`` (SHA256SUMS of the manifest beside them), join them, extract each archive whose
    bytes are all there and not yet extracted into ``into``; returns the groups extracted by now.

    A missing piece in the middle, or a corrupt one, is an error naming it; a missing last piece only leaves the later
    archives for the next call.
    """
    m = Manifest.load(pieces / "manifest.json")
    have = []
    for i, p in enumerate(m.pieces, 1):
        path = pieces / p.name
        if not path.is_file():
            break
        got = sha256(path)
        if got != p.sha256 or path.stat().st_size != p.size:
            raise RecipeError(
                f"piece {p.name} is corrupt: sha256 {got}, manifest {p.sha256}",
                hint=f"carry .gpu/p{i}/{p.name} again",
            )
        have.append(path)
    later = [p.name for p in m.pieces[len(have) :] if (pieces / p.name).is_file()]
    if later:
        missing = m.pieces[len(have)].name
        raise RecipeError(
            f"piece {missing} is missing while later pieces ({', '.join(later)}) are here",
            hint=f"carry .gpu/p{len(have) + 1}/ before running the later calls",
        )
    into.mkdir(parents=True, exist_ok=True)
    marks = into / ".bundle"
    marks.mkdir(exist_ok=True)
    done = []
    for a in m.archives:
        mark = marks / f"{a.group}.{a.sha256[:16]}"
        if mark.exists():
            done.append(a.group)
            continue
        if a.complete_with_piece > len(have):
            continue
        blob = pieces / a.file
        with blob.open("wb") as out:
            skip, left = a.start, a.size
            for path in have:
                size = path.stat().st_size
                if skip >= size:
                    skip -= size
                    continue
                with path.open("rb") as f:
                    f.seek(skip)
                    chunk = f.read(min(left, size - skip))
                out.write(chunk)
                left -= len(chunk)
                skip = 0
                if not left:
                    break
        if sha256(blob) != a.sha256:
            raise RecipeError(f"archive {a.file} joined from the pieces does not match its sha256 {a.sha256}")
        with tarfile.open(blob, "r:xz") as tar:
            tar.extractall(into, filter="tar")
        blob.unlink()
        mark.touch()
        done.append(a.group)
    return done


def gpu_check() -> str:
    """One line naming the GPU, or a :class:`RecipeError` when none is visible."""
    try:
        import torch
    except ImportError as exc:
        raise RecipeError("torch is not importable here", hint="the GPU machine has torch 2.11.0") from exc
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        raise RecipeError(
            "no CUDA GPU visible (torch.cuda.is_available() is False)",
            hint="run the GPU session on the GPU machine; on CPU use the tests",
        )
    props = torch.cuda.get_device_properties(0)
    gib = props.total_memory / 2**30
    return f"{torch.cuda.device_count()} x {props.name}, {gib:.0f} GiB, torch {torch.__version__}"


# ---------------------------------------------------------------- what the entry points import

ENTRY_MODULES = (
    "vllm.entrypoints.openai.api_server",  # vllm serve
    "vllm.entrypoints.llm",  # --backend vllm (vllm.LLM)
    "cosmos_rl.launcher",
    "cosmos_rl.launcher.launch_all",  # the cosmos-rl command
    "recipe_lib.cli",
    # what recipe_lib.cli's commands import when they run (the CLI imports them lazily): the GPU stages' code
    "recipe_lib.inference.scoring",
    "recipe_lib.inference.hf",
    "recipe_lib.inference.vllm",
    "recipe_lib.inference.endpoint",
    "recipe_lib.video",
    "recipe_lib.data.synthetic",
    "recipe_lib.models.tiny",
    "recipe_lib.train.cosmos_entry.sft_entry",
    "recipe_lib.train.cosmos_entry.grpo_entry",
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl",  # transformers loads model modules lazily
    "datasets",
    "qwen_vl_utils",
)
_OPTIONAL_GUARDS = ("ImportError", "ModuleNotFoundError", "Exception", "BaseException")
_PLATFORM_TESTS = re.compile(
    r"TYPE_CHECKING|version_info|platform|available|installed|is_|has_|envs\.|os\.environ|PY\d", re.IGNORECASE
)


@dataclass
class ImportScan:
    """Modules reached from the entry modules through imports that run at import time, and the required ones that
    resolve nowhere (neither in the searched folders, nor the standard library, nor a declared distribution)."""

    modules: int = 0
    unreadable: list[str] = field(default_factory=list)
    missing: dict[str, set[str]] = field(default_factory=dict)  # module -> importers


def scan_imports(roots: Iterable[str], paths: list[Path], present_tops: set[str]) -> ImportScan:
    """Static walk of the imports executed when ``roots`` are imported, over the sources in ``paths``.

    Followed (required imports only): ``import`` / ``from ... import`` at module level, in class bodies and in
    ``if`` / ``try`` / ``with`` blocks, relative imports, a package's ``__init__`` for each dotted parent,
    ``from pkg import name`` where ``name`` is a submodule. Required, unless inside ``try`` with an ``except
    ImportError`` (or broader) handler, or under an ``if`` whose test names the platform, a version, TYPE_CHECKING
    or an availability check. Not seen: imports inside functions (run later, when called),
    ``importlib.import_module`` / ``__import__`` with computed names, what compiled extensions import, and which
    branch of a plain ``if`` runs (both are taken as run).
    """
    import ast

    stdlib = set(sys.stdlib_module_names) | {"__future__", "__main__"}
    scan = ImportScan()
    seen: set[str] = set()

    def locate(name: str) -> Path | None:
        rel = Path(*name.split("."))
        for base in paths:
            for cand in (base / rel / "__init__.py", base / rel.with_suffix(".py")):
                if cand.is_file():
                    return cand
            if (base / rel.parent).is_dir() and list((base / rel.parent).glob(f"{rel.name}.*.so")):
                return base / rel.parent / f"{rel.name}.so"  # compiled: found, not read
            if (base / rel).is_dir() and not (base / rel).name.endswith((".dist-info", ".libs")):
                return base / rel  # a namespace package (opentelemetry, google, nvidia)
        return None

    def top_known(name: str) -> bool:
        top = name.split(".")[0]
        return top in stdlib or top in present_tops

    queue: list[tuple[str, str, bool]] = [(r, "<entry>", False) for r in roots]
    while queue:
        name, importer, maybe = queue.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod in seen:
                continue
            path = locate(mod)
            if path is None:
                if not top_known(mod) and not (maybe and i == len(parts)):
                    scan.missing.setdefault(mod, set()).add(importer)
                break
            seen.add(mod)
            scan.modules += 1
            if path.suffix != ".py":
                continue
            try:
                tree = ast.parse(path.read_bytes(), filename=str(path))
            except (SyntaxError, ValueError):
                scan.unreadable.append(mod)
                continue
            package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
            queue.extend((target, mod, maybe_sub) for target, maybe_sub in _imports(tree, package))
    return scan


def _imports(tree: object, package: str) -> list[tuple[str, bool]]:
    """The required imports run when a module's body runs: (module, True where it is ``name`` of ``from pkg import
    name``, a submodule only if such a file exists)."""
    import ast

    out: list[tuple[str, bool]] = []

    def absolute(level: int, module: str | None) -> str:
        base = package.split(".") if package else []
        if level > 1:
            base = base[: len(base) - (level - 1)]
        return ".".join([*base, module] if module else base)

    def visit(nodes: list, required: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(node, ast.Import) and required:
                out.extend((a.name, False) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and required:
                mod = absolute(node.level, node.module) if node.level else (node.module or "")
                out.append((mod, False))
                out.extend((f"{mod}.{a.name}", True) for a in node.names if a.name != "*")
            elif isinstance(node, ast.Try | getattr(ast, "TryStar", ast.Try)):
                guarded = any(h.type is None or _names_guard(h.type) for h in node.handlers)
                visit(node.body, required and not guarded)
                for h in node.handlers:  # after a guarded try, the handler holds the fallback: not required
                    visit(h.body, required and not guarded)
                visit(node.orelse, required and not guarded)
                visit(node.finalbody, required)
            elif isinstance(node, ast.With | ast.AsyncWith) and any(
                isinstance(i.context_expr, ast.Call)
                and ast.unparse(i.context_expr.func).endswith("suppress")
                and any(_names_guard(a) for a in i.context_expr.args)
                for i in node.items
            ):
                visit(node.body, False)  # with contextlib.suppress(ImportError): an optional import
            elif isinstance(node, ast.If):
                platform = bool(_PLATFORM_TESTS.search(ast.unparse(node.test)))
                visit(node.body, required and not platform)
                visit(node.orelse, required and not platform)
            elif isinstance(node, ast.ClassDef | ast.With | ast.AsyncWith | ast.For | ast.While):
                visit(node.body, required)
                visit(getattr(node, "orelse", []), required)

    visit(tree.body, True)
    return out


def _names_guard(node: object) -> bool:
    import ast

    return any(isinstance(n, ast.Name) and n.id in _OPTIONAL_GUARDS for n in ast.walk(node))


# Declared distributions whose import name is not their name with "-" as "_" (used where this machine lacks them).
IMPORT_NAMES = {
    "pillow": {"PIL"},
    "pyyaml": {"yaml"},
    "opencv-python-headless": {"cv2"},
    "scikit-learn": {"sklearn"},
    "protobuf": {"google"},
    "absl-py": {"absl"},
    "py-cpuinfo": {"cpuinfo"},
    "cupy-cuda13x": {"cupy", "cupyx", "cupy_backends"},
    "cuda-bindings": {"cuda"},
    "cuda-core": {"cuda"},
    "attrs": {"attr", "attrs"},
    "tensorboard": {"tensorboard"},
    "pytest": {"pytest", "_pytest"},
    "setuptools": {"setuptools", "pkg_resources", "_distutils_hack"},
    "prometheus-client": {"prometheus_client"},
    "nvidia-nccl-cu13": {"nvidia"},
    "onnxruntime": {"onnxruntime"},
    "pybind11": {"pybind11"},
}


def present_top_modules(present: Iterable[str]) -> set[str]:
    """Top-level import names of the declared distributions: from this machine's installed metadata where the same
    distribution is installed here (any version), else :data:`IMPORT_NAMES`, else the name with ``-`` as ``_``."""
    import importlib.metadata as md

    by_dist: dict[str, set[str]] = {}
    for top, dists in md.packages_distributions().items():
        for d in dists:
            by_dist.setdefault(canon(d), set()).add(top)
    tops: set[str] = set()
    for name in present:
        fallback = IMPORT_NAMES.get(canon(name), {canon(name).replace("-", "_")})
        tops |= by_dist.get(canon(name), fallback) | (fallback if name.startswith("nvidia-") else set())
    return tops


# ---------------------------------------------------------------- the device calls


@dataclass
class DeviceCall:
    number: int
    command: str
    carry: list[str]
    groups_ready: list[str]
    seconds: int = 0  # the most it runs: its stages' timeouts and the margin (CALL_LIMIT stops it starting more)


def plan(m: Manifest, limit: int = 600) -> list[DeviceCall]:
    """One device call per piece (at most four): carry ``.gpu/pN``, then ``gpu_session.sh call N``."""
    n = len(m.pieces)
    if n > 4:
        raise RecipeError(
            f"the bundle has {n} pieces; the session runs in at most four calls",
            hint="rebuild with a larger --piece-mib (at most about 60: the checkout travels too)",
        )
    calls = []
    for i in range(1, max(n, len(CALLS)) + 1):
        piece = f".gpu/p{min(i, n)}"
        ready = [a.group for a in m.archives if a.complete_with_piece <= min(i, n)]
        for stage in CALLS.get(i, []):
            late = [g for g in STAGES[stage][0] if g not in ready]
            if late:
                whole = {a.group: a.complete_with_piece for a in m.archives}
                raise RecipeError(
                    f"device call {i} runs {stage}, which needs the archive {late[0]}, whole only after piece "
                    f"{whole.get(late[0], '?')}",
                    hint="move the stage to a later call in CALLS (benchmarks/gpu_bundle.py) or rebuild with larger "
                    "--piece-mib",
                )
        # Each call stops starting stages once its own stages' time is spent, so a call that overruns cannot eat the
        # time of the calls after it (the session's device time is one budget, DEVICE_BUDGET_S).
        seconds = min(limit - 30, sum(STAGES[s][1] for s in CALLS.get(i, [])) + CALL_MARGIN_S)
        command = f"CALL_LIMIT={seconds} bash benchmarks/gpu_session.sh call {i} 2>&1 | tail -c 11000"
        calls.append(DeviceCall(i, command, [piece] if i <= n else [], ready, seconds))
    for c in calls:
        if len(c.command) > DEVICE_COMMAND_LIMIT:
            raise RecipeError(f"device call {c.number} is {len(c.command)} characters (limit {DEVICE_COMMAND_LIMIT})")
    return calls


def checkout_bytes() -> int:
    """Bytes of the tracked files (what every device call carries besides the pieces)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())


def render_plan(m: Manifest, calls: list[DeviceCall]) -> str:
    tree = checkout_bytes()
    lines = [f"checkout {tree / MIB:.1f} MiB; transfer limit {TRANSFER_LIMIT / MIB:.0f} MiB a call"]
    for c in calls:
        carried = sum(m.pieces[int(x[len(".gpu/p") :]) - 1].size for x in c.carry)
        total = tree + carried + 4096
        if total > TRANSFER_LIMIT:
            raise RecipeError(f"call {c.number} would carry {total / MIB:.1f} MiB (limit 64)", hint="smaller pieces")
        lines.append(
            f"call {c.number}: carry={json.dumps(c.carry)} ({total / MIB:.1f} MiB with the checkout); "
            f"archives whole: {', '.join(c.groups_ready) or 'none'}\n  command: {c.command}"
        )
    worst = MACHINE_START_S + sum(c.seconds for c in calls)
    fits = "fits" if worst <= DEVICE_BUDGET_S else f"is {worst - DEVICE_BUDGET_S} s over"
    lines.append(
        f"device time at most {worst} s (a machine start of {MACHINE_START_S} s and every stage to its timeout): "
        f"{fits} a session's {DEVICE_BUDGET_S} s. The calls run in order of need: a session whose budget runs out "
        "keeps the results of the calls before (each failed machine start costs 90-105 s of it)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="resolve, download, pack and split (needs network)")
    b.add_argument("--out", type=Path, default=REPO / ".gpu")
    b.add_argument("--piece-mib", type=float, default=PIECE_MIB, help=f"largest piece (default {PIECE_MIB})")
    b.add_argument("--machine", type=Path, default=MACHINE)
    b.add_argument("--constraints", type=Path, default=CONSTRAINTS)
    b.add_argument("--wheels", type=Path, default=None, help="wheel cache (default OUT/wheels)")
    pl = sub.add_parser("plan", help="print the device calls for a built bundle")
    pl.add_argument("--out", type=Path, default=REPO / ".gpu")
    u = sub.add_parser("unpack", help="check and join the pieces here, extract the whole archives")
    u.add_argument("--pieces", type=Path, required=True)
    u.add_argument("--into", type=Path, required=True)
    sub.add_parser("gpu-check", help="name the GPU, or fail with one line")
    ci = sub.add_parser("check-imports", help="the entry points' import-time imports against an unpacked bundle")
    ci.add_argument("--site", type=Path, required=True)
    ci.add_argument("--machine", type=Path, default=MACHINE)
    st = sub.add_parser("stages", help="the stages of one device call: name, seconds, archives needed")
    st.add_argument("call", type=int)
    args = p.parse_args(argv)
    try:
        if args.cmd == "build":
            args.out.mkdir(parents=True, exist_ok=True)
            m = build(args.out.resolve(), args.piece_mib, args.machine, args.constraints, args.wheels)
            text = describe(m) + "\n" + render_plan(m, plan(m))
            (args.out / "plan.txt").write_text(text + "\n")
            print(text)
        elif args.cmd == "plan":
            m = Manifest.load(args.out / "manifest.json")
            print(render_plan(m, plan(m)))
        elif args.cmd == "unpack":
            print("archives ready:", " ".join(unpack(args.pieces, args.into)) or "none yet")
        elif args.cmd == "check-imports":
            scan = scan_imports(ENTRY_MODULES, [args.site, REPO], present_top_modules(read_machine(args.machine)))
            print(f"{scan.modules} modules reached; {len(scan.unreadable)} unreadable")
            for mod, by in sorted(scan.missing.items()):
                print(f"missing {mod} (imported by {', '.join(sorted(by)[:3])})")
            if scan.missing:
                raise RecipeError(f"{len(scan.missing)} modules imported at import time resolve nowhere")
        elif args.cmd == "stages":
            if args.call not in CALLS:
                raise RecipeError(f"no device call {args.call}", hint=f"calls are {', '.join(map(str, CALLS))}")
            override = os.environ.get("GPU_CALL_STAGES", "").split()
            chosen = [(n.partition(":")[0], n.partition(":")[2]) for n in override] or [
                (n, "") for n in CALLS[args.call]
            ]
            for name, seconds in chosen:
                if name not in STAGES:
                    raise RecipeError(f"unknown stage {name!r}", hint=f"stages are {', '.join(STAGES)}")
                print(name, seconds or STAGES[name][1], ",".join(STAGES[name][0]))
        else:
            print(gpu_check())
    except RecipeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
