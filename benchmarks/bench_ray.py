"""Ray engine scaling on this machine: the same clips scored with 1 and then 2 scoring workers, on CPU.

Starts a local Ray cluster on 127.0.0.1 with ``--cpus`` CPUs, renders ``--clips`` synthetic clips, builds the demo
critic if needed, and scores the clips with ``engine="ray"`` and ``num_workers`` 1 then 2 (fresh output folders, so
nothing comes from the cache). Prints clips/s for each and the ratio::

    python benchmarks/bench_ray.py --clips 32 --cpus 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    a = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep the local cluster on 127.0.0.1
    os.environ.setdefault("RAY_agent_register_timeout_ms", "300000")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import ray

    from recipe_lib.data.synthetic import SynthConfig, generate_clips
    from recipe_lib.inference.score_config import ScoreConfig
    from recipe_lib.inference.scoring import score_videos
    from recipe_lib.models.tiny import demo_model_dir, ensure_demo_critic
    from recipe_lib.profiles import get_profile

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    clips = generate_clips(SynthConfig(n=a.clips, out_dir=tmp / "clips", seed=5, style="contrast", frames=16))
    critic = ensure_demo_critic(demo_model_dir())
    demo = get_profile("demo")
    ray.init(num_cpus=a.cpus, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    results = {}
    try:
        for n in a.workers:
            cfg = ScoreConfig(
                inputs=[str(clips.out_dir / "videos")],
                out_dir=tmp / f"out-{n}",
                model=str(critic),
                video=demo.video,
                sampling=demo.sampling,
                device="cpu",
                dtype="float32",
                batch_size=a.batch_size,
                engine="ray",
                num_workers=n,
            )
            start = time.perf_counter()
            result = score_videos(cfg, progress=False)
            seconds = time.perf_counter() - start
            assert result.n_scored_now == a.clips, result.summary()
            results[n] = {"seconds": round(seconds, 2), "clips_per_s": round(a.clips / seconds, 3)}
            print(json.dumps({"workers": n, **results[n]}), flush=True)
    finally:
        ray.shutdown()
    if len(results) >= 2:
        lo, hi = min(results), max(results)
        ratio = results[hi]["clips_per_s"] / results[lo]["clips_per_s"]
        print(json.dumps({"ratio": f"{hi} vs {lo} workers", "speedup": round(ratio, 2), "cpus": a.cpus}))


if __name__ == "__main__":
    main()
