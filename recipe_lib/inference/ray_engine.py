"""Scoring on a Ray cluster (``ScoreConfig.engine = "ray"``): the same rows, keys, skips and summary as the local run.

The pipeline is a Ray Data dataset over the clips still missing from the store::

    clips (key, item, local file)  ->  decode and size frames (CPU tasks)  ->  score (actor pool, one critic per actor,
    ``batch_size`` clips per call)  ->  rows streamed back to the driver, committed to ``results.sqlite`` per batch

The driver keeps the only writer of the store, so rows land exactly once whatever the workers do: a scoring worker
lost mid-run ends that pass over the clips, and the driver starts another pass, with new actors, over the clips whose
rows have not come back (up to :data:`MAX_FAILED_PASSES` passes in a row that return nothing); a row that would arrive
twice is refused by its key. A killed driver loses at most the batches in flight; rerunning the same command scores
only what is missing. A clip a worker cannot read is a recorded skip whose reason names the node.

The pool has as many actors as there are batches to score, up to ``num_workers``: a few clips load one critic, not
one per worker that would get nothing to do.

Ray is optional (``pip install 'plausibility-recipes[ray]'``) and imported only here, only when this engine runs.
Workers need this package and the critic installed on every node, and the clips (or their URLs' cache) on storage
every node can read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from recipe_lib.errors import RecipeError
from recipe_lib.progress import progress_bar

if TYPE_CHECKING:
    from recipe_lib.inference.plan import ScorePlan
    from recipe_lib.inference.score_config import ScoreConfig
    from recipe_lib.inference.store import ResultStore

INSTALL_HINT = "install the ray extra: pip install 'plausibility-recipes[ray]' (or pip install 'ray[data]')"
LOOPBACK = ("127.0.0.1", "localhost")


def _quiet_ray_notices(local_cluster: bool) -> None:
    """Keep two notices of Ray's out of a notebook's output, before Ray is imported; neither says anything about the
    run, and Ray's warnings and errors still show:

    * "Missing packages: ['ipywidgets'] ... for rich notebook output", logged at INFO by ``ray.widgets`` when Ray is
      imported in a kernel without ipywidgets (a venv without the ``lab`` extra); its rich output is not used here;
    * for a cluster this process starts (``local_cluster``): "Token authentication is enabled for this Ray cluster",
      which a new local ``ray.init()`` prints every time it turns token authentication on by itself. Saying
      ``RAY_AUTH_MODE=token`` keeps that default and drops the notice; a ``RAY_AUTH_MODE`` the user set wins.
    """
    logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
    if local_cluster:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def check_ray(cfg: ScoreConfig) -> None:
    """Fail early, with one clear message, when Ray is missing, the options are wrong or no cluster answers."""
    if cfg.address in (None, "", "auto", "local") or _host_port(cfg.address)[0] in LOOPBACK:
        # A cluster on this machine: Ray would otherwise swap 127.0.0.1 for the machine's interface address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    _quiet_ray_notices(local_cluster=cfg.address in (None, "", "local"))
    try:
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RecipeError("the ray engine needs Ray Data, which is not installed", hint=INSTALL_HINT) from exc
    if cfg.num_workers < 1:
        raise RecipeError(f"--num-workers must be at least 1, got {cfg.num_workers}")
    if cfg.gpus_per_worker < 0:
        raise RecipeError(f"--gpus-per-worker must be 0 or more, got {cfg.gpus_per_worker}")
    if cfg.backend != "hf":
        raise RecipeError("the ray engine scores with the transformers backend", hint="use --backend hf")
    address = cfg.address
    if address in (None, "", "local"):
        import ray

        if not ray.is_initialized():  # a cluster this process started is checked when scoring starts
            # The local cluster ray.init starts has this machine's cores (and no GPU unless CUDA sees one).
            check_resources(cfg, float(os.cpu_count() or 1), float(_local_gpus()), "this machine")
        return
    if address == "auto":
        return
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        raise RecipeError(
            f"no Ray cluster at {address}: {exc.strerror or exc}",
            hint="start one with 'ray start --head --port PORT' and pass its host:port, or leave out --address "
            "to start a local one",
        ) from exc


ACTOR_CPUS_CPU, ACTOR_CPUS_GPU = 0.5, 1.0  # CPUs a scoring actor holds: on CPU it shares cores with decoding
DECODE_CPUS = 0.25  # CPUs one decode task holds


def actor_cpus(cfg: ScoreConfig) -> float:
    return ACTOR_CPUS_GPU if cfg.gpus_per_worker else ACTOR_CPUS_CPU


def check_resources(cfg: ScoreConfig, cpus: float, gpus: float, where: str) -> None:
    """The scoring actors (and one decode task beside them) must fit the cluster: Ray Data would otherwise wait for
    actors that can never be placed, at 0 of N, without a word."""
    per_cpu = actor_cpus(cfg)
    need_cpus = cfg.num_workers * per_cpu + DECODE_CPUS
    if need_cpus > cpus:
        fit = max(0, int((cpus - DECODE_CPUS) // per_cpu))
        raise RecipeError(
            f"--num-workers {cfg.num_workers} needs {need_cpus:g} CPUs ({per_cpu:g} per scoring actor, "
            f"{DECODE_CPUS:g} for decoding) but {where} has {cpus:g}",
            hint=f"use --num-workers {fit} or fewer, or add nodes" if fit else "add CPUs to the cluster",
        )
    need_gpus = cfg.num_workers * cfg.gpus_per_worker
    if need_gpus > gpus:
        fit = int(gpus // cfg.gpus_per_worker) if cfg.gpus_per_worker else 0
        raise RecipeError(
            f"--num-workers {cfg.num_workers} x --gpus-per-worker {cfg.gpus_per_worker:g} needs {need_gpus:g} GPUs "
            f"but {where} has {gpus:g}",
            hint=(f"use --num-workers {fit} or fewer" if fit else "add GPU nodes")
            + ", or lower --gpus-per-worker (0 scores on CPU)",
        )


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def use_token_auth_when_available() -> None:
    """Connect to a cluster the way ``ray start`` set it up. Ray 2.60's ``ray start --head`` turns token
    authentication on by itself when a token exists (``~/.ray/auth_token``, which a plain ``ray.init()`` writes, e.g.
    notebook 07; or ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``), but a driver given an explicit address does not,
    and then retries ``InvalidAuthToken`` until it gives up. So, unless ``RAY_AUTH_MODE`` says otherwise, a driver
    that has a token sends it (a cluster without authentication ignores it)."""
    if "RAY_AUTH_MODE" in os.environ:
        return  # the user's choice
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication
        return
    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")  # Ray reads its settings once; this process now sees token mode too


def _host_port(address: str) -> tuple[str, int]:
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RecipeError(f"bad Ray address {address!r}", hint="give the head node as host:port, e.g. 127.0.0.1:6379")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def _connected(cfg: ScoreConfig) -> Any:
    """ray.init for this run (a local single-node cluster on 127.0.0.1 when no address is given)."""
    _quiet_ray_notices(local_cluster=cfg.address in (None, "", "local"))
    import ray

    if ray.is_initialized():
        yield ray  # a notebook or test that connected already keeps its connection
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    address = cfg.address if cfg.address not in (None, "", "local") else None
    if address is None or address == "auto" or _host_port(address)[0] in LOOPBACK:
        kwargs["_node_ip_address"] = "127.0.0.1"  # keep all traffic on loopback for a cluster on this machine
    if address is None:
        kwargs["include_dashboard"] = False
    else:
        use_token_auth_when_available()
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RecipeError(
            f"cannot connect to the Ray cluster at {address}: {exc}",
            hint="if the cluster uses token authentication, give this machine its token (the head's "
            "~/.ray/auth_token, or RAY_AUTH_TOKEN); RAY_AUTH_MODE=disabled on both sides turns it off",
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _node() -> str:
    import ray

    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"


def decode_batch(batch: dict[str, Any], video_settings: Any) -> dict[str, Any]:
    """CPU stage: sample and size the frames of each clip; a clip that cannot be read carries its reason."""
    from recipe_lib.errors import VideoError
    from recipe_lib.video import load_for_model

    videos, errors = [], []
    for item_blob, local in zip(batch["item"], batch["local"]):
        item = pickle.loads(item_blob)
        start = time.perf_counter()
        try:
            video = load_for_model(str(local), video_settings)
            videos.append(pickle.dumps((video, time.perf_counter() - start)))
            errors.append("")
        except VideoError as exc:
            reason = str(exc)
            if str(local) != item["video_url"]:
                reason = reason.replace(str(local), item["video_url"])
            videos.append(b"")
            errors.append(f"{reason} (on node {_node()})")
    return {"key": batch["key"], "item": batch["item"], "video": videos, "error": errors}


class ScoreClips:
    """Scoring stage: one critic per actor, loaded once; each call scores one batch of decoded clips."""

    def __init__(self, cfg: ScoreConfig, prompt: Any) -> None:
        from recipe_lib.inference.scorers import make_scorer

        self.cfg = cfg
        self.prompt = prompt
        self.scorer = make_scorer(cfg, prompt)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from recipe_lib.inference.plan import scored_row

        rows = [""] * len(batch["key"])
        skips = list(batch["error"])
        ready, where = [], []
        for i, (key, item_blob, video_blob) in enumerate(zip(batch["key"], batch["item"], batch["video"])):
            if skips[i]:
                continue
            item = pickle.loads(item_blob)
            video, decode_s = pickle.loads(video_blob)
            start = time.perf_counter() - decode_s
            ready.append(self.scorer.prepare_video(item, video, start))
            where.append((i, str(key), item))
        if ready:
            for (i, key, item), row in zip(where, self.scorer.score_batch(ready)):
                if "skip_reason" in row:  # the backend could not score this clip (a failed request, bad logprobs)
                    skips[i] = f"{row['skip_reason']} (on node {_node()})"
                else:
                    rows[i] = json.dumps(scored_row(self.cfg, self.prompt, key, item, row))
        return {"key": batch["key"], "row": rows, "skip": skips, "item": batch["item"]}


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's own log lines (its progress-bar notice, "execution finished") off while we score: progress is our
    bar, and a notebook cell must not show them as stderr. Errors still show."""
    loggers = [logging.getLogger(name) for name in ("ray.data", "ray.data._internal.execution.streaming_executor")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


MAX_FAILED_PASSES = 3  # passes in a row that lose a scoring worker before any batch comes back: then the run fails
MIN_BLOCKS = 200  # input blocks of a large run (more on a cluster of more than MIN_BLOCKS / 4 scoring actors)


def pool_size(cfg: ScoreConfig, n_clips: int) -> int:
    """Scoring actors for ``n_clips``: one per batch of ``batch_size`` clips, at most ``num_workers``. An actor loads a
    critic before it scores anything, so one that no batch would reach is only start-up time and memory (and Ray Data
    warns that the pool received fewer inputs than it has actors)."""
    return max(1, min(cfg.num_workers, math.ceil(n_clips / cfg.batch_size)))


def input_blocks(n_clips: int, workers: int) -> int:
    """Blocks of the input list: one clip each for a small run, so each of its batches is an input of its own and
    every actor of the pool gets one; for a large run at least four per actor, so every actor stays fed."""
    return max(1, min(n_clips, max(MIN_BLOCKS, 4 * workers)))


def _scoring_dataset(ray: Any, cfg: ScoreConfig, plan: ScorePlan, todo: list[tuple[str, dict[str, Any]]]) -> Any:
    """One pass over ``todo``: decode on CPU tasks, score on a pool of :func:`pool_size` actors."""
    workers = pool_size(cfg, len(todo))
    records = [{"key": k, "item": pickle.dumps(it), "local": plan.local[it["video_url"]]} for k, it in todo]
    ds = ray.data.from_items(records, override_num_blocks=input_blocks(len(records), workers))
    # On CPU the scoring actors and decode tasks share the cores; with GPUs each actor holds one CPU for collation.
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"video_settings": cfg.video},
        batch_size=cfg.batch_size,
        num_cpus=DECODE_CPUS,
        max_retries=3,
    )
    return ds.map_batches(
        ScoreClips,
        # The actors need the settings, not the input list (which can be ~100k paths).
        fn_constructor_kwargs={"cfg": dataclasses.replace(cfg, inputs=[]), "prompt": plan.prompt},
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=actor_cpus(cfg),
        num_gpus=cfg.gpus_per_worker or None,
        # Not restarted by Ray: Ray Data hands an actor its function and context as object-store references, which
        # Ray does not keep for an actor's restart (its core logs an error line, "core_worker.cc: ... has constructor
        # arguments in the object store and max_restarts > 0", for the first such restartable actor of a process). A
        # lost actor ends the pass instead, and score_with_ray starts another over what is missing.
        max_restarts=0,
    )


def _commit(batch: dict[str, Any], plan: ScorePlan, store: ResultStore) -> int:
    """Store one batch's rows and record its skips; returns the rows stored."""
    fresh = []
    for row, skip, item_blob in zip(batch["row"], batch["skip"], batch["item"]):
        if skip:
            plan.skipped.append({"video": pickle.loads(item_blob)["video_url"], "reason": str(skip)})
        else:
            fresh.append(json.loads(row))
    return store.append(fresh)


def score_with_ray(
    cfg: ScoreConfig, plan: ScorePlan, todo: list[tuple[str, dict[str, Any]]], store: ResultStore, progress: bool
) -> int:
    """Score ``todo`` on the cluster, committing rows to ``store`` as batches come back; returns rows stored. A pass
    that loses a scoring worker is followed by one over the clips that did not come back (see the module docstring)."""
    n_now = 0
    with _connected(cfg) as ray, _quiet_ray_data():
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        resources = ray.cluster_resources()
        check_resources(cfg, resources.get("CPU", 0.0), resources.get("GPU", 0.0), "the Ray cluster")
        workers = pool_size(cfg, len(todo))
        bar = progress_bar(total=len(todo), desc=f"scoring on ray ({workers} workers)", unit="clip", enabled=progress)
        failed_passes = 0
        with bar:
            while todo:
                returned: set[str] = set()
                batches = _scoring_dataset(ray, cfg, plan, todo).iter_batches(batch_size=None, batch_format="numpy")
                try:
                    for batch in batches:
                        n_now += _commit(batch, plan, store)
                        returned.update(str(key) for key in batch["key"])
                        bar.update(len(batch["key"]))
                    break
                except ray.exceptions.RayActorError as exc:
                    failed_passes = 0 if returned else failed_passes + 1
                    if failed_passes >= MAX_FAILED_PASSES:
                        raise
                    todo = [(key, item) for key, item in todo if key not in returned]
                    bar.write(
                        f"a scoring worker was lost ({type(exc).__name__}); scoring the {len(todo)} clips "
                        "still missing with new workers"
                    )
    return n_now


def start_local_cluster(num_cpus: int | None = None, num_gpus: int | None = None) -> dict[str, Any]:
    """Start a single-node Ray cluster in this process, on 127.0.0.1 (for notebooks and quick runs); scoring with
    ``engine="ray"`` then uses it. Returns its resources. Stop it with :func:`stop_local_cluster`."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep it on 127.0.0.1
    _quiet_ray_notices(local_cluster=True)
    try:
        import ray
    except ImportError as exc:
        raise RecipeError("a local Ray cluster needs Ray Data, which is not installed", hint=INSTALL_HINT) from exc
    if not ray.is_initialized():
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    return dict(ray.cluster_resources())


def stop_local_cluster() -> None:
    """Stop the cluster :func:`start_local_cluster` started (nothing when none runs)."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
