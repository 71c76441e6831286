#!/usr/bin/env bash
# The whole GPU check in at most four device calls. A GPU machine (torch 2.11 CUDA, Python 3.12, no network) gets this
# checkout plus one piece of the offline bundle per call (`make gpu-bundle` builds .gpu/p1 ... .gpu/p4 and prints
# the plan). Call N copies piece N to /tmp/stage, extracts every archive of the bundle that is whole by now into
# /tmp/site, and runs the stages benchmarks/gpu_bundle.py lists for call N (CALLS there; each stage has a timeout,
# and the call stops starting stages CALL_LIMIT seconds after it began). The calls must follow each other while the
# machine is still held: /tmp is lost when it is given back.
#
# The device calls (`python benchmarks/gpu_bundle.py plan` prints them with the sizes; command + carry list):
#   1. CALL_LIMIT=510 bash benchmarks/gpu_session.sh call 1 2>&1 | tail -c 11000        carry [".gpu/p1"]
#   2. CALL_LIMIT=350 bash benchmarks/gpu_session.sh call 2 2>&1 | tail -c 11000        carry [".gpu/p2"]
#   3. CALL_LIMIT=360 bash benchmarks/gpu_session.sh call 3 2>&1 | tail -c 11000        carry [".gpu/p3"]
#   4. CALL_LIMIT=450 bash benchmarks/gpu_session.sh call 4 2>&1 | tail -c 11000        carry []
# (calls 1-3 run what the full-scale guide records: fine-tuning, cosmos-rl, serve; call 4 the speed benchmark. Each
# call's limit is its stages' timeouts plus 30 s; with a 120 s machine start the four fit 30 minutes of device time
# (1790 s). Give each call a timeout of its CALL_LIMIT + 40 s; a machine that fails to start costs 90-105 s of the
# budget, so after two of them drop call 4.)
# (58 MiB pieces make the bundle three pieces; built with smaller ones, a fourth would travel with call 4.)
#
# One stage alone, on a machine that already has /tmp/site (e.g. a rerun in the same lease):
#   bash benchmarks/gpu_session.sh STAGE       # check bench-hf train-7b cosmos-demo cosmos-7b cosmos-grpo agree
#                                              # bench-vllm serve bench (= bench-vllm + bench-hf) bench-gpu
# Results: $OUT (the device tool's empty folder; build/gpu elsewhere), a few small files a call: callN.log (each
# stage's lines about steps, loss, memory, speed and errors), timeline.json (every stage so far: start, seconds,
# exit status; wall time from the first call's start to the last result) and the stages' JSON / tgz files.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-build/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT
W=${GPU_WORK:-/tmp/gpuwork}            # scratch: clips, models, logs (kept between calls while the machine is held)
SITE=${GPU_SITE:-/tmp/site}            # the bundle, extracted
STAGE=${GPU_STAGE:-/tmp/stage}         # the pieces carried so far
PIECES=${GPU_PIECES:-.gpu}             # where this checkout holds them
mkdir -p "$W/logs" "$W/bin"
ln -sf "$(command -v "${GPU_PYTHON:-python3}")" "$W/bin/python"  # cosmos-rl starts `python`
export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PATH=$W/bin:$SITE/bin:$SITE/redis-server/bin:$PATH
export LD_LIBRARY_PATH=$SITE/redis-server/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export HF_HUB_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
export HF_DATASETS_DISABLE_PROGRESS_BARS=1 PLAUSIBILITY_BUILD_DIR=$W/build
PY=${GPU_PYTHON:-python3}
KEEP='step|loss|memory|peak|GiB|MiB|videos/s|videos_per_s|max_abs|argmax|error|Error|Traceback|rc=|Killed|OOM|out of memory|engine|ready|skip'
log() { echo "[$(date +%H:%M:%S)] $*"; }
TINY=$W/build/models/tiny-critic

demo_assets() {
  [ -f "$TINY/config.json" ] || $PY -m recipe_lib.cli tiny-model >/dev/null || return 1
  [ -d "$W/clips/videos" ] || $PY -m recipe_lib.cli synth --n 24 --style contrast --seed 1 --out "$W/clips" >/dev/null
  [ -d "$W/clips7b/videos" ] || $PY -m recipe_lib.cli synth --n 64 --width 448 --height 252 --frames 48 --fps 16 \
    --seed 2 --out "$W/clips7b" >/dev/null
}
seeded_7b() {  # the Qwen2.5-VL-7B shape with seeded random weights, saved as safetensors (both backends load them)
  [ -f "$W/m7b/model.safetensors.index.json" ] || $PY -m recipe_lib.cli tiny-model --arch qwen2.5-vl-7b \
    --out "$W/m7b" --seed 0 --device cuda >/dev/null
}
watch_memory() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$1" & echo $!; }
peak() { echo "peak GPU memory used: $(sort -n "$1" | tail -1) MiB"; }
wait_for() {  # URL, seconds
  for _ in $(seq 1 "$2"); do curl -sf "$1" >/dev/null && return 0; sleep 1; done
  return 1
}

run_stage() {
  local name=$1
  case "$name" in
  check)
    $PY benchmarks/gpu_bundle.py gpu-check || exit 2
    $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    [ -f "$SITE/vllm/__init__.py" ] && $PY -c "import vllm; print('vllm', vllm.__version__)"
    [ -f "$SITE/cosmos_rl/__init__.py" ] && redis-server --version
    demo_assets && log "demo critic and clips ready" ;;
  bench) run_stage bench-vllm; run_stage bench-hf ;;
  bench-gpu)  # benchmarks/bench_gpu.py: both backends, the vision variants and fp8 in one run (about 8 minutes)
    [ -f benchmarks/bench_gpu.py ] || { echo "skip: benchmarks/bench_gpu.py is not in this checkout"; return 0; }
    $PY benchmarks/bench_gpu.py --out "$OUT" --work "$W" --time-limit $((STAGE_SECONDS - 60)) 2>&1 | tail -30 ;;
  bench-vllm)
    [ -f "$W/cfg7b/config.json" ] || $PY -m recipe_lib.cli tiny-model --arch qwen2.5-vl-7b --config-only --out "$W/cfg7b"
    $PY benchmarks/bench_vllm.py --model "$W/cfg7b" --dummy --out "$OUT/bench-vllm.json" --batch 64 \
      --time-limit $((STAGE_SECONDS - 90)) ${BENCH_ONLY:+--only $BENCH_ONLY} 2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore" | tail -25 ;;
  bench-hf)
    $PY benchmarks/bench_scoring.py --arch qwen2.5-vl-7b --random-weights --device cuda \
      --out "$OUT/bench-hf.json" --time-limit $((STAGE_SECONDS - 50)) --only 2k/expected/bs16/fast \
      7.8k/expected/bs8/fast 2k/generate/bs16/graph 2k/thinking/bs32/graph 2k/generate/bs1/naive 2>&1 | tail -25 ;;
  train-7b)
    if [ ! -f benchmarks/train_7b.sh ]; then echo "skip: benchmarks/train_7b.sh is not in this checkout"; return 0; fi
    mkdir -p "$W/train7b" "$W/t7b"
    seeded_7b && ln -sfn "$W/m7b" "$W/t7b/m7b"  # one copy of the 16.6 GB weights for every stage (64 GB disk)
    OUT=$W/train7b WORK=$W/t7b bash benchmarks/train_7b.sh; local rc=$?
    tar czf "$OUT/train-7b.tgz" -C "$W/train7b" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' .
    return $rc ;;
  agree)
    demo_assets || return 1
    log "agreement hf / vllm: demo critic"
    $PY benchmarks/agreement.py --label demo-critic --model "$TINY" --clips "$W/clips/videos" \
      --out "$W/agreement-demo.json" -- --device cuda --dtype float32 --batch-size 8 --enforce-eager \
      --gpu-memory-utilization 0.3 --max-model-len 4096 2>&1 | tail -8
    seeded_7b || return 1
    log "agreement hf / vllm: 7B shape, seeded weights"
    $PY benchmarks/agreement.py --label qwen2.5-vl-7b-seeded --model "$W/m7b" --clips "$W/clips7b/videos" \
      --out "$W/agreement-7b.json" -- --device cuda --dtype bfloat16 --batch-size 8 --limit 16 --fps 4 \
      --total-pixels 1605632 --gpu-memory-utilization 0.5 --max-model-len 8192 --enforce-eager 2>&1 | tail -8
    cp "$W"/agreement-demo.json "$W"/agreement-7b.json "$OUT"/ 2>/dev/null ;;
  serve)
    demo_assets || return 1
    local rows=$W/serve.json
    rm -f "$rows"
    log "vllm serve: demo critic"
    $PY -m vllm.entrypoints.openai.api_server --model "$TINY" --served-model-name critic --host 127.0.0.1 \
      --port 8011 --dtype float32 --gpu-memory-utilization 0.25 --max-model-len 4096 --enforce-eager \
      > "$W/logs/serve-demo.log" 2>&1 &
    local server=$!
    if wait_for http://127.0.0.1:8011/v1/models 180; then
      $PY benchmarks/agreement.py --label served-demo-critic --a hf --b openai --model "$TINY" \
        --clips "$W/clips/videos" --out "$W/agreement-served-demo.json" -- --device cuda --dtype float32 \
        --base-url http://127.0.0.1:8011/v1 --served-model critic --concurrency 8 2>&1 | tail -8
    else echo "error: vllm serve (demo critic) did not answer within 180 s"; fi
    kill $server; wait $server 2>/dev/null
    grep -E "$KEEP" "$W/logs/serve-demo.log" | tail -15 > "$OUT/serve-demo.log"
    seeded_7b || return 1
    # Both 7B engines (the server and --backend vllm) run eagerly: each starts in about a minute instead of two
    # (compilation and CUDA graph capture), so the pair fits the stage; the comparison stays like for like.
    log "vllm serve: 7B shape, seeded weights (both engines --enforce-eager)"
    local opts=(--fps 4 --total-pixels 1605632)
    $PY -m vllm.entrypoints.openai.api_server --model "$W/m7b" --served-model-name critic7b --host 127.0.0.1 \
      --port 8012 --dtype bfloat16 --gpu-memory-utilization 0.55 --max-model-len 8192 --enforce-eager \
      > "$W/logs/serve-7b.log" 2>&1 &
    server=$!
    if wait_for http://127.0.0.1:8012/v1/models 300; then
      log "engine ready; agreement hf / openai on 16 clips, then videos/s at concurrency 8 and 32"
      $PY benchmarks/agreement.py --label served-7b --a hf --b openai --model "$W/m7b" --clips "$W/clips7b/videos" \
        --out "$W/agreement-served-7b.json" -- --device cuda --dtype bfloat16 --limit 16 "${opts[@]}" \
        --base-url http://127.0.0.1:8012/v1 --served-model critic7b --concurrency 8 2>&1 | tail -8
      $PY benchmarks/serve_rows.py --label 7b --backend openai --concurrency 8 32 --model "$W/m7b" \
        --clips "$W/clips7b/videos" --out "$rows" -- "${opts[@]}" --base-url http://127.0.0.1:8012/v1 \
        --served-model critic7b 2>&1 | tail -4
    else echo "error: vllm serve (7B shape) did not answer within 300 s"; fi
    kill $server; wait $server 2>/dev/null
    sleep 5  # the engine process lets go of the GPU after the server
    grep -E "$KEEP" "$W/logs/serve-7b.log" | tail -20 > "$OUT/serve-7b.log"
    log "the same clips through --backend vllm (in this process, same weights)"
    $PY benchmarks/serve_rows.py --label 7b --backend vllm --model "$W/m7b" --clips "$W/clips7b/videos" \
      --out "$rows" -- "${opts[@]}" --device cuda --dtype bfloat16 --batch-size 32 \
      --gpu-memory-utilization 0.6 --max-model-len 8192 --enforce-eager 2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore" | tail -4
    cp "$W"/agreement-served-*.json "$rows" "$OUT"/ 2>/dev/null ;;
  cosmos-demo)
    demo_assets || return 1
    local C=$W/cos; mkdir -p "$C"
    $PY -m recipe_lib.cli train demo-data >/dev/null || return 1
    local conv=$W/build/data/conversations smi
    local eval_split; eval_split=$($PY -c "from recipe_lib.demo import demo_eval_split; print(demo_eval_split())")
    smi=$(watch_memory "$C/mem-demo.csv")
    log "cosmos-rl SFT of the demo critic, 1 GPU"
    $PY -m recipe_lib.cli cosmos render --kind sft --gpus 1 --model "$TINY" --dataset "$conv/sft/train" \
      --output-dir "$C/sft-demo" --out "$C/sft-demo.toml" --set train.max_num_steps=20 \
      --set train.train_batch_per_replica=16 --set train.train_policy.mini_batch=4 --set train.optm_lr=5e-4 \
      --set train.optm_warmup_steps=2 --set train.ckpt.save_freq=10 --set train.ckpt.save_mode=sync \
      --set custom.vision.fps=4 --set custom.vision.max_pixels=12544 --set custom.vision.total_pixels=401408 \
      --set policy.model_max_length=4096 | tail -1 || return 1
    timeout $((STAGE_SECONDS - 60)) $PY -m recipe_lib.cli cosmos launch "$C/sft-demo.toml" --run \
      --log-dir "$C/logs-sft-demo" > "$C/launch-sft-demo.log" 2>&1; echo "launch rc=$?"
    kill "$smi"; peak "$C/mem-demo.csv"
    grep -E "$KEEP" "$C/launch-sft-demo.log" | tail -25
    log "sweep the cosmos-rl checkpoints"
    timeout 50 $PY -m recipe_lib.cli sweep "$C/sft-demo" --data "$eval_split" --device cuda --limit 64 \
      --mode expected --fps 4 --max-pixels 12544 --max-frames 8 2>&1 | tail -8
    tar czf "$OUT/cosmos-demo.tgz" -C "$C" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.pth' --exclude='*.bin' \
      sft-demo.toml launch-sft-demo.log mem-demo.csv logs-sft-demo sft-demo ;;
  cosmos-7b)
    demo_assets || return 1
    seeded_7b || return 1
    local C=$W/cos smi; mkdir -p "$C"
    [ -d "$C/conv7b" ] || $PY -m recipe_lib.cli prepare conversations --data "$W/clips7b/dataset" --kind sft \
      --out "$C/conv7b" | tail -1
    smi=$(watch_memory "$C/mem-7b.csv")
    # full fine-tuning of 8.3 B parameters keeps ~100 GB of weights, gradients and AdamW state: on a card under
    # 100 GiB (H100) that state goes to CPU memory (fsdp_offload); an H200 holds it
    local gib offload=false
    gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    [ "${gib:-0}" -lt 102400 ] && offload=true
    log "cosmos-rl SFT of the 7B shape, 1 GPU, the recipe's model_max_length and video settings (offload $offload)"
    $PY -m recipe_lib.cli cosmos render --kind sft --gpus 1 --model "$W/m7b" --dataset "$C/conv7b" \
      --output-dir "$C/sft-7b" --out "$C/sft-7b.toml" --set train.max_num_steps=4 \
      --set train.train_batch_per_replica=4 --set train.train_policy.mini_batch=1 --set train.ckpt.save_freq=4 \
      --set train.ckpt.save_mode=sync --set train.ckpt.max_keep=1 --set train.fsdp_offload=$offload \
      | tail -1 || return 1
    timeout $((STAGE_SECONDS - 50)) $PY -m recipe_lib.cli cosmos launch "$C/sft-7b.toml" --run \
      --log-dir "$C/logs-sft-7b" > "$C/launch-sft-7b.log" 2>&1; echo "launch rc=$?"
    kill "$smi"; peak "$C/mem-7b.csv"
    grep -E "$KEEP" "$C/launch-sft-7b.log" | tail -25
    timeout 40 $PY -m recipe_lib.cli sweep "$C/sft-7b" --data "$W/clips7b/dataset" --device cuda --limit 8 \
      --no-start 2>&1 | tail -6
    tar czf "$OUT/cosmos-7b.tgz" -C "$C" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.pth' \
      --exclude='*.bin' --exclude='*.distcp' sft-7b.toml launch-sft-7b.log mem-7b.csv logs-sft-7b sft-7b
    # the exported weights (16 GB) and the optimizer state saved with them leave the disk to later stages
    find "$C/sft-7b" -mindepth 2 -maxdepth 2 -type d \( -name checkpoints -o -name safetensors \) -exec rm -rf {} +
    df -h /tmp | tail -1 ;;
  cosmos-grpo)
    # cosmos-rl's colocated GRPO (policy and rollout share one GPU) with its HF rollout ("example_hf"), as in its
    # configs/qwen2-5/qwen2-5-3b-p-fsdp2-colocated-grpo.toml; rendered for 2 GPUs, then folded onto one.
    demo_assets || return 1
    local C=$W/cos smi; mkdir -p "$C"
    $PY -m recipe_lib.cli train demo-data >/dev/null || return 1
    smi=$(watch_memory "$C/mem-grpo.csv")
    $PY -m recipe_lib.cli cosmos render --kind grpo --gpus 2 --model "$TINY" \
      --dataset "$W/build/data/conversations/grpo/train" --output-dir "$C/grpo-demo" --out "$C/grpo-demo.toml" \
      --set mode=colocated --set rollout.backend=example_hf --set train.force_use_hf=true \
      --set policy.parallelism.dp_shard_size=1 --set rollout.parallelism.tp_size=1 --set train.fsdp_offload=false \
      --set train.max_num_steps=4 --set train.train_batch_per_replica=8 --set rollout.n_generation=4 \
      --set rollout.batch_size=4 --set rollout.max_response_length=32 --set policy.model_max_length=4096 \
      --set train.ckpt.enable_checkpoint=false --set custom.vision.fps=4 --set custom.vision.max_pixels=12544 \
      | tail -1 || return 1
    log "cosmos-rl colocated GRPO, HF rollout, demo critic, 1 GPU"
    timeout $((STAGE_SECONDS - 30)) cosmos-rl --config "$C/grpo-demo.toml" --log-dir "$C/logs-grpo" \
      recipe_lib/train/cosmos_entry/grpo_entry.py > "$C/launch-grpo.log" 2>&1; echo "launch rc=$?"
    kill "$smi"; peak "$C/mem-grpo.csv"
    grep -E "$KEEP|reward" "$C/launch-grpo.log" | tail -25
    tar czf "$OUT/cosmos-grpo.tgz" -C "$C" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' \
      grpo-demo.toml launch-grpo.log mem-grpo.csv logs-grpo ;;
  *) echo "error: unknown stage $name"; exit 2 ;;
  esac
}

# A stage with its timeout, its log in $W/logs, its trimmed lines in callN.log, its line in the timeline.
timed_stage() {
  local name=$1 seconds=$2 needs=$3 call=$4 start rc status
  for group in ${needs//,/ }; do
    if ! ls "$SITE/.bundle/$group".* >/dev/null 2>&1; then
      echo "skip $name: archive '$group' not yet whole (carry the next piece)" | tee -a "$OUT/call$call.log"
      echo "{\"call\": $call, \"stage\": \"$name\", \"status\": \"skipped: no $group\"}" >> "$W/timeline.jsonl"
      return 0
    fi
  done
  local left=$((CALL_LIMIT - SECONDS))
  [ "$seconds" -gt "$left" ] && seconds=$left
  if [ "$seconds" -lt 30 ]; then
    echo "skip $name: ${left}s left in this call" | tee -a "$OUT/call$call.log"
    echo "{\"call\": $call, \"stage\": \"$name\", \"status\": \"skipped: time\"}" >> "$W/timeline.jsonl"
    return 0
  fi
  log "stage $name (at most ${seconds}s)" | tee -a "$OUT/call$call.log"
  start=$(date +%s)
  STAGE_SECONDS=$seconds timeout -k 10 "$seconds" bash "$0" "$name" > "$W/logs/$name.log" 2>&1; rc=$?
  status=$([ $rc = 0 ] && echo ok || { [ $rc = 124 ] && echo timeout || echo "failed rc=$rc"; })
  { grep -E "$KEEP|^\[" "$W/logs/$name.log" | grep -v "^INFO\|^(EngineCore" | tail -40; \
    echo "== $name: $status in $(($(date +%s) - start))s"; } | tee -a "$OUT/call$call.log"
  echo "{\"call\": $call, \"stage\": \"$name\", \"start\": $start, \"end\": $(date +%s), \"rc\": $rc, \"status\": \"$status\"}" \
    >> "$W/timeline.jsonl"
}

write_timeline() {
  $PY - "$W" "$OUT/timeline.json" <<'PYEOF'
import json, sys, time
from pathlib import Path
w, out = Path(sys.argv[1]), Path(sys.argv[2])
first = int((w / "session_start").read_text())
stages = [json.loads(x) for x in (w / "timeline.jsonl").read_text().splitlines() if x.strip()]
last = max([s["end"] for s in stages if "end" in s] + [first])
doc = {"session_start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first)),
       "last_result": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last)),
       "wall_s_start_to_last_result": last - first, "stages": stages}
out.write_text(json.dumps(doc, indent=1) + "\n")
print(f"wall time from the first call's start to the last result: {last - first} s")
PYEOF
}

if [ "${1:?usage: gpu_session.sh call N | STAGE}" = call ]; then
  N=${2:?call number}
  CALL_LIMIT=${CALL_LIMIT:-570}
  [ -f "$W/session_start" ] || date +%s > "$W/session_start"
  touch "$W/timeline.jsonl"
  : > "$OUT/call$N.log"
  log "call $N on $(nvidia-smi -L 2>/dev/null | head -1)" | tee -a "$OUT/call$N.log"
  mkdir -p "$STAGE"
  [ -d "$PIECES/p$N" ] && cp "$PIECES/p$N"/* "$STAGE"/
  $PY benchmarks/gpu_bundle.py unpack --pieces "$STAGE" --into "$SITE" 2>&1 | tee -a "$OUT/call$N.log"
  [ "${PIPESTATUS[0]}" = 0 ] || exit 2
  $PY benchmarks/gpu_bundle.py gpu-check 2>&1 | tee -a "$OUT/call$N.log"
  [ "${PIPESTATUS[0]}" = 0 ] || exit 2
  while read -r name seconds needs; do
    timed_stage "$name" "$seconds" "$needs" "$N"
  done < <($PY benchmarks/gpu_bundle.py stages "$N")
  write_timeline | tee -a "$OUT/call$N.log"
else
  STAGE_SECONDS=${STAGE_SECONDS:-600}
  run_stage "$1"
fi
