#!/usr/bin/env bash
# One-GPU fine-tuning of the Qwen2.5-VL-7B shape (Cosmos-Reason1-7B's) with the in-process trainer, in about 8 minutes
# of an H100: seeded random weights, SFT with LoRA on clips whose violation is visible in single frames (does the
# loss fall, does held-out accuracy leave the majority class?), full-parameter SFT only where the memory estimate says
# it fits, GRPO with LoRA (8 completions, the thinking prompt), then the adapter checkpoint read back by
# `plausibility score` and `plausibility sweep`. Each phase prints one JSON line; all go to $OUT/train7b.json.
#
#   bash benchmarks/train_7b.sh            # on the GPU machine (packages the project needs on PYTHONPATH)
#   bash benchmarks/train_7b.sh --tiny     # the same phases with the demo critic on CPU (a dry run, minutes)
#
# Writes only under $OUT (default build/train7b): train7b.json, train7b.log (trimmed), and per phase its
# history.jsonl / eval.jsonl / sweep summary (small files). Weights and clips go to $WORK (default /tmp/train7b).
# Knobs (environment): TRAIN_SECONDS (time for the learning run's steps, default 120), LR (1e-3), LORA_R (16),
# N_CLIPS (480 on a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
OUT=${OUT:-build/train7b}
WORK=${WORK:-/tmp/train7b}
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PLAUSIBILITY_BUILD_DIR=$WORK/build
LOG=$OUT/train7b.log
: > "$LOG"
T0=$(date +%s)
TRAIN_SECONDS=${TRAIN_SECONDS:-120}
LR=${LR:-1e-3}
LORA_R=${LORA_R:-16}
# The language model's projections and MLP, and the vision tower's attention (qkv) and MLP (same MLP names): a critic
# from random weights must learn to see, not only to answer.
TARGETS="[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,qkv]"

if [ $TINY = 1 ]; then
  DEVICE=cpu; DTYPE=float32; N_CLIPS=48; PROBE=2; MAX_MAIN=6; GRPO_STEPS=1; ANSWER=16; BATCH=8; COMPLETIONS=4; GEN=4
  TRAIN_SECONDS=${TRAIN_SECONDS_TINY:-20}
else
  # 480 clips: with 120 (2026-12-07, H100) the critic memorised its training clips (loss 0.07) while held-out
  # accuracy stayed at the majority class; more distinct clips per step leave less to memorise
  DEVICE=cuda; DTYPE=bfloat16; N_CLIPS=${N_CLIPS:-480}; PROBE=3; MAX_MAIN=400; GRPO_STEPS=2; ANSWER=256; BATCH=16
  COMPLETIONS=16; GEN=8
fi

log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }
# Run a command, keep the last lines of its output in the log, return its status.
run() {
  local name=$1; shift
  local started=$(date +%s)
  "$@" > "$WORK/$name.out" 2>&1
  local rc=$?
  grep -v "FutureWarning\|import pynvml\|_pytree.py\|^$" "$WORK/$name.out" | tail -15 >> "$LOG"
  echo "$name rc=$rc $(( $(date +%s) - started ))s" >> "$LOG"
  return $rc
}
# Sample the GPU's used memory every 0.5 s while a phase runs (the allocator's own peak is in history.jsonl).
smi_start() { [ $TINY = 1 ] && return; nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 \
  > "$WORK/smi-$1.csv" 2>/dev/null & SMI=$!; }
smi_stop() { [ $TINY = 1 ] && return; kill "$SMI" 2>/dev/null; wait "$SMI" 2>/dev/null; }

cat > "$WORK/t7b.py" <<'PYEOF'
"""Helpers of benchmarks/train_7b.sh: the data, the memory estimate, the per-phase summaries."""
import json, os, shutil, statistics, sys, time
from pathlib import Path

OUT, WORK = Path(os.environ["OUT"]), Path(os.environ["WORK"])
SUMMARY = OUT / "train7b.json"


def data(clips: str) -> None:
    """Train / held-out split (stratified), binary labels as the demo uses, SFT and GRPO conversations."""
    import datasets

    from recipe_lib.config import VideoSettings
    from recipe_lib.data.conversations import save_conversations, to_conversations
    from recipe_lib.data.splits import balance_labels, stratified_split
    from recipe_lib.demo import DEMO_PROMPT, binary_labels

    ds = binary_labels(datasets.load_from_disk(str(Path(clips) / "dataset")))
    train, held_out = stratified_split(ds, eval_size=0.25, seed=0)
    video = VideoSettings(fps=4.0, total_pixels=None, max_pixels=112 * 112, min_pixels=28 * 28, max_frames=8)
    save_conversations(to_conversations(train, "sft", prompt=DEMO_PROMPT, video=video), WORK / "sft_train")
    save_conversations(to_conversations(held_out, "sft", prompt=DEMO_PROMPT, video=video), WORK / "sft_eval")
    balanced, _ = balance_labels(train, seed=0)
    grpo = to_conversations(balanced, "grpo", prompt="video_reward_with_thinking", video=video)
    save_conversations(grpo, WORK / "grpo_train")
    labels = [int(v) for v in held_out["pc"]]
    record({"phase": "data", "train": len(train), "held_out": len(held_out),
            "held_out_majority": max(labels.count(1), labels.count(5)) / len(labels), "video": video.__dict__})


def estimate(model: str, dtype: str, device: str, r: str, targets: str) -> None:
    """GPU bytes of full-parameter and LoRA SFT before activations, and whether full-parameter fits this GPU (with
    8 GB left for activations); prints 1 or 0 on stdout's last line."""
    from recipe_lib.train.capacity import mode_estimates
    from recipe_lib.train.config import LoraConfig

    lora = LoraConfig(enable=True, r=int(r), target_modules=targets.strip("[]").split(","))
    est = mode_estimates(model, dtype, lora)
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        name = torch.cuda.get_device_name(0)
    else:
        total, name = 80 * 10**9, "cpu (nominal 80 GB)"
    fits = est["full"]["bytes"] + 8 * 10**9 <= total
    record({"phase": "estimate", "gpu": name, "gpu_total_bytes": total, "params": est["params"],
            "lora_params": est["lora_params"], "full_bytes": est["full"]["bytes"], "lora_bytes": est["lora"]["bytes"],
            "full_parts": est["full"]["parts"], "full_runs": fits})
    print(int(fits))


def step_seconds(run: str) -> None:
    """Median seconds of the run's steps after its first (the first pays for warm-up)."""
    rows = [json.loads(x) for x in (Path(run) / "history.jsonl").read_text().splitlines()]
    times = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
    print(statistics.median(times))


def phase(name: str, run: str, rc: str, seconds: str, smi: str = "") -> None:
    """One phase's summary from its run folder: step times, peak memory, loss/reward per step, evaluations."""
    run_dir = Path(run)
    out: dict = {"phase": name, "rc": int(rc), "wall_s": int(seconds)}
    history = run_dir / "history.jsonl"
    rows = [json.loads(x) for x in history.read_text().splitlines()] if history.exists() else []
    if rows:
        steps = [r["seconds"] for r in rows]
        out.update(steps=rows[-1]["step"], step_s_median=round(statistics.median(steps[1:] or steps), 3),
                   step_s_first=round(steps[0], 3))
        peaks = [r["gpu_peak_bytes"] for r in rows if "gpu_peak_bytes" in r]
        if peaks:
            out["gpu_peak_gib"] = round(max(peaks) / 2**30, 2)
        for key in ("loss", "reward_mean", "completion_length", "parsed_fraction", "kl", "token_accuracy"):
            values = [round(r[key], 4) for r in rows if r.get(key) is not None]
            if values:
                out[key] = values if len(values) <= 40 else values[:: max(1, len(values) // 40)] + [values[-1]]
    evals = run_dir / "eval.jsonl"
    if evals.exists():
        out["eval"] = [{k: e.get(k) for k in ("step", "eval/accuracy", "accuracy", "majority_accuracy",
                                               "eval/majority_accuracy", "pearson", "eval/pearson") if k in e}
                       for e in map(json.loads, evals.read_text().splitlines())]
    if smi and Path(smi).exists():
        used = [int(x) for x in Path(smi).read_text().split() if x.strip().isdigit()]
        if used:
            out["nvidia_smi_peak_mib"] = max(used)
    final = run_dir / "checkpoints" / "final"
    if final.is_dir():
        out["final_bytes"] = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
        out["final_files"] = sorted(p.name for p in final.iterdir())[:20]
    error = WORK / f"{name}.out"
    if int(rc) != 0 and error.exists():
        out["error"] = [x for x in error.read_text().splitlines() if x.startswith(("error:", "hint:", "Traceback"))
                        or "Error" in x][-4:]
    keep = OUT / name
    keep.mkdir(exist_ok=True)
    for small in ("history.jsonl", "eval.jsonl", "samples.jsonl", "skipped.jsonl"):
        if (run_dir / small).exists() and (run_dir / small).stat().st_size < 2 << 20:
            shutil.copy(run_dir / small, keep / small)
    record(out)


def scored(name: str, folder: str, rc: str, seconds: str, smi: str = "") -> None:
    """Summary of a score or sweep phase (its metrics and the checkpoints it read)."""
    out: dict = {"phase": name, "rc": int(rc), "wall_s": int(seconds)}
    folder = Path(folder)
    summary = folder / "sweep_summary.json"
    if summary.exists():
        points = json.loads(summary.read_text())["points"]
        out["points"] = [{"checkpoint": p["name"], "step": p["step"], "scored": p["scored"],
                          **{k: p["metrics"].get(k) for k in ("accuracy", "pearson", "majority_accuracy")}}
                         for p in points]
        keep = OUT / name
        keep.mkdir(exist_ok=True)
        for small in ("sweep_summary.json", "sweep.csv"):
            if (folder / small).exists():
                shutil.copy(folder / small, keep / small)
    elif (folder / "predictions.csv").exists():
        import pandas as pd

        frame = pd.read_csv(folder / "predictions.csv")
        out["scored"] = len(frame)
        out["accuracy"] = round(float((frame["score"] == frame["label"]).mean()), 4)
        out["majority_accuracy"] = round(float(frame["label"].value_counts(normalize=True).max()), 4)
        out["score_counts"] = {str(k): int(v) for k, v in frame["score"].value_counts().sort_index().items()}
    if smi and Path(smi).exists():
        used = [int(x) for x in Path(smi).read_text().split() if x.strip().isdigit()]
        if used:
            out["nvidia_smi_peak_mib"] = max(used)
    error = WORK / f"{name}.out"
    if int(rc) != 0 and error.exists():
        out["error"] = [x for x in error.read_text().splitlines() if x.startswith(("error:", "hint:"))][-2:]
    record(out)


def record(row: dict) -> None:
    """Print the phase's JSON line and rewrite train7b.json with every phase so far (a killed script keeps them)."""
    print(json.dumps(row), flush=True)
    data = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {"phases": []}
    data["phases"] = [p for p in data["phases"] if p.get("phase") != row["phase"]] + [row]
    data["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    SUMMARY.write_text(json.dumps(data, indent=1))


def note(name: str, *pairs: str) -> None:
    """A phase recorded from the shell: key=value pairs (numbers kept as numbers)."""
    row: dict = {"phase": name}
    for pair in pairs:
        key, value = pair.split("=", 1)
        row[key] = int(value) if value.isdigit() else value
    record(row)


def env(tiny: str) -> None:
    import platform

    import torch, transformers, peft

    row = {"phase": "env", "tiny": tiny == "1", "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "peft": peft.__version__}
    if torch.cuda.is_available():
        row["gpu"] = torch.cuda.get_device_name(0)
    record(row)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
PYEOF
export OUT WORK
H="$PY $WORK/t7b.py"
rm -f "$OUT/train7b.json"

log "environment"
run env $H env $TINY || { cat "$WORK/env.out"; log "the packages are missing: stop"; exit 1; }
tail -1 "$WORK/env.out"

if [ $TINY = 1 ]; then
  M=$WORK/tiny-critic
  log "the demo critic"
  run weights $PY -m recipe_lib.cli tiny-model --out "$M" || exit 1
else
  M=$WORK/m7b
  log "save the 7B shape with seeded random weights"
  started=$(date +%s)
  [ -f "$M/model.safetensors.index.json" ] || run weights $PY -m recipe_lib.cli tiny-model --arch qwen2.5-vl-7b \
    --out "$M" --seed 0 --device cuda || exit 1
  $H note weights wall_s=$(( $(date +%s) - started ))
fi

log "clips: penetration against plausible clips of the same scenes (contrast style, 112x112)"
[ -d "$WORK/clips/dataset" ] || run synth $PY -m recipe_lib.cli synth --n $N_CLIPS --style contrast --seed 5 \
  --scenes free_fall,bounce,slide_friction --violations penetration --width 112 --height 112 --frames 16 --fps 8 \
  --out "$WORK/clips" || exit 1
run data $H data "$WORK/clips" || { tail -5 "$WORK/data.out"; exit 1; }
tail -1 "$WORK/data.out"

TRAIN=(train sft --config configs/demo/sft.toml --quiet
  --set "policy.model_name_or_path=$M" --set policy.model_gradient_checkpointing=true
  --set local.device=$DEVICE --set local.dtype=$DTYPE --set local.num_workers=4 --set local.batch_order=balanced
  --set "custom.dataset.path=$WORK/sft_train" --set "custom.eval_dataset.path=$WORK/sft_eval"
  --set train.train_batch_per_replica=$BATCH --set train.train_policy.mini_batch=$BATCH --set train.epoch=1000
  --set train.optm_warmup_steps=3 --set train.optm_decay_type=none --set validation.batch_size=20)
LORA=(--set local.lora.enable=true --set local.lora.r=$LORA_R --set local.lora.alpha=$(( 2 * LORA_R ))
  --set "local.lora.target_modules=$TARGETS")

log "SFT with LoRA: $PROBE steps to time a step"
SFT=$WORK/sft-lora
started=$(date +%s)
smi_start sft-probe
run sft-probe $PY -m recipe_lib.cli "${TRAIN[@]}" "${LORA[@]}" --restart --set "train.output_dir=$SFT" \
  --set train.optm_lr=$LR --set local.max_steps=$PROBE --set validation.freq=1000 --set train.ckpt.save_freq=1000
rc=$?
smi_stop
$H phase sft-lora-probe "$SFT" $rc $(( $(date +%s) - started )) "$WORK/smi-sft-probe.csv"
[ $rc = 0 ] || exit 1

STEP_S=$($H step_seconds "$SFT" | tail -1)
MAIN=$($PY -c "print(max($PROBE + 1, min($MAX_MAIN, $PROBE + int($TRAIN_SECONDS / max($STEP_S, 1e-3)))))")
FREQ=$(( (MAIN + 5) / 6 ))
log "SFT with LoRA: resume from step $PROBE and train to step $MAIN ($STEP_S s a step), held-out every $FREQ"
started=$(date +%s)
smi_start sft
run sft-lora $PY -m recipe_lib.cli "${TRAIN[@]}" "${LORA[@]}" --set "train.output_dir=$SFT" --set train.optm_lr=$LR \
  --set local.max_steps=$MAIN --set validation.freq=$FREQ --set train.ckpt.save_freq=1000
rc=$?
smi_stop
$H phase sft-lora "$SFT" $rc $(( $(date +%s) - started )) "$WORK/smi-sft.csv"
grep -q "resumed from step $PROBE" "$WORK/sft-lora.out" && $H note resume resumed_from=$PROBE

# The adapter checkpoint read back first: the phases after it are the ones a short stage may cut.
VIDEO=(--fps 4 --max-pixels 12544 --max-frames 8)
log "plausibility score reads the SFT adapter checkpoint"
started=$(date +%s)
smi_start score
run score $PY -m recipe_lib.cli score "$WORK/sft_eval" --model "$SFT/checkpoints/final" --out "$WORK/score" \
  --prompt video_reward_compact --mode expected --device $DEVICE --dtype $DTYPE --batch-size 20 "${VIDEO[@]}"
rc=$?
smi_stop
$H scored score "$WORK/score" $rc $(( $(date +%s) - started )) "$WORK/smi-score.csv"

log "plausibility sweep reads the run (its starting model and the adapter checkpoint)"
started=$(date +%s)
run sweep $PY -m recipe_lib.cli sweep "$SFT" --data "$WORK/sft_eval" --mode expected --device $DEVICE --dtype $DTYPE \
  --batch-size 20 --quiet
rc=$?
$H scored sweep "$SFT/sweep" $rc $(( $(date +%s) - started ))

log "memory estimate of full-parameter SFT"
$H estimate "$M" $DTYPE $DEVICE $LORA_R "$TARGETS" > "$WORK/estimate.out" 2>>"$LOG"
grep '^{' "$WORK/estimate.out"
FULL_FITS=$(tail -1 "$WORK/estimate.out")
if [ "$FULL_FITS" = 1 ]; then
  log "full-parameter SFT with gradient checkpointing: 2 steps, no checkpoint (timing and memory only)"
  started=$(date +%s)
  smi_start full
  run sft-full $PY -m recipe_lib.cli "${TRAIN[@]}" --restart --set "train.output_dir=$WORK/sft-full" \
    --set train.optm_lr=1e-5 --set local.max_steps=2 --set validation.enable=false \
    --set train.ckpt.enable_checkpoint=false
  rc=$?
  smi_stop
  $H phase sft-full "$WORK/sft-full" $rc $(( $(date +%s) - started )) "$WORK/smi-full.csv"
else
  $H note sft-full "skipped=the estimate does not fit this GPU with 8 GB for activations (see the estimate phase)"
fi

log "GRPO with LoRA from the SFT adapter: $GEN completions a prompt, the thinking prompt, <= $ANSWER tokens"
GRPO=$WORK/grpo-lora
started=$(date +%s)
smi_start grpo
run grpo-lora $PY -m recipe_lib.cli train grpo --config configs/demo/grpo.toml --quiet --restart "${LORA[@]}" \
  --set "policy.model_name_or_path=$SFT/checkpoints/final" --set policy.model_gradient_checkpointing=true \
  --set local.device=$DEVICE --set local.dtype=$DTYPE --set "custom.dataset.path=$WORK/grpo_train" \
  --set "train.output_dir=$GRPO" --set rollout.n_generation=$GEN --set rollout.max_response_length=$ANSWER \
  --set train.train_batch_per_replica=$COMPLETIONS --set train.train_policy.mini_batch=$GEN \
  --set train.train_policy.temperature=1.0 --set train.optm_lr=1e-5 --set train.optm_warmup_steps=0 \
  --set local.max_steps=$GRPO_STEPS --set train.ckpt.save_freq=1000 --set validation.enable=false
rc=$?
smi_stop
$H phase grpo-lora "$GRPO" $rc $(( $(date +%s) - started )) "$WORK/smi-grpo.csv"

log "done in $(( $(date +%s) - T0 )) s"
$H note total wall_s=$(( $(date +%s) - T0 ))
