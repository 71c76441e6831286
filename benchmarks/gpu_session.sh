#!/usr/bin/env bash
# One GPU lease, in stages: carry vLLM and the wheels the project needs, then run the project's own code on the GPU
# (agreement of the transformers and vLLM backends on identical weights, throughput rows, the served endpoint).
#
# A GPU machine with torch 2.11 (CUDA) and no network gets, besides this checkout:
#   .gpu/p0, .gpu/p1   the vLLM 0.22.1 bundle in two pieces (see the README's "GPU install" section for how it is made)
#   .whl/              wheels: transformers 4.57.6, tokenizers 0.22.2, huggingface-hub 0.36.2, av, datasets, ...
#   .whl2/             uvicorn (for `vllm serve`)
#   .cosmos/           cosmos-rl 0.4.7, the packages it imports, redis-server (benchmarks/cosmos_carry.sh)
#
#   bash benchmarks/gpu_session.sh carry0      # piece 1 of the bundle into /tmp/stage
#   bash benchmarks/gpu_session.sh carry1      # piece 2, unpack to /tmp/site
#   bash benchmarks/gpu_session.sh wheels      # install .whl/* into /tmp/site2
#   bash benchmarks/gpu_session.sh agree       # hf vs vllm on the demo critic and on the 7B shape (seeded weights)
#   bash benchmarks/gpu_session.sh bench       # vLLM rows and transformers rows, same workloads, same lease
#   bash benchmarks/gpu_session.sh serve       # `vllm serve` + plausibility score --backend openai
#   bash benchmarks/gpu_session.sh cosmos-install   # .cosmos into /tmp/site3, redis-server into /tmp/redis
#   bash benchmarks/gpu_session.sh cosmos-demo      # SFT of the demo critic via cosmos-rl, sweep of its checkpoints
#   bash benchmarks/gpu_session.sh cosmos-7b        # a few SFT steps of the 7B shape (seeded weights), sweep
# Results go to $OUT (or build/gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu}
mkdir -p "$OUT"
W=/tmp/gpuwork
mkdir -p "$W"
export PYTHONPATH=/tmp/site3:/tmp/site2:/tmp/site:$PWD PYTHONUNBUFFERED=1
export PATH=/tmp/site3/bin:/tmp/redis/bin:$PATH LD_LIBRARY_PATH=/tmp/redis/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} HF_HUB_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0
export TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1 PLAUSIBILITY_BUILD_DIR=$W/build
PY=python3
log() { echo "[$(date +%H:%M:%S)] $*"; }

demo_assets() {
  $PY -m recipe_lib.cli tiny-model >/dev/null || return 1
  [ -d "$W/clips/videos" ] || $PY -m recipe_lib.cli synth --n 24 --style contrast --seed 1 --out "$W/clips" >/dev/null
  [ -d "$W/clips7b/videos" ] || $PY -m recipe_lib.cli synth --n 16 --width 448 --height 252 --frames 48 --fps 16 \
    --seed 2 --out "$W/clips7b" >/dev/null
}

case "${1:?stage}" in
  carry0)
    mkdir -p /tmp/stage && cp .gpu/p0/bundle.part0 /tmp/stage/ && ls -la /tmp/stage && nvidia-smi -L ;;
  carry1)
    cp .gpu/p1/bundle.part1 /tmp/stage/ && cat /tmp/stage/bundle.part0 /tmp/stage/bundle.part1 > /tmp/stage/b.tar.xz \
      && (cd /tmp/stage && sha256sum b.tar.xz && cat "$OLDPWD/.gpu/p1/SHA256SUMS") \
      && $PY -c "import tarfile; tarfile.open('/tmp/stage/b.tar.xz').extractall('/tmp')" && rm -f /tmp/stage/* \
      && $PY -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" ;;
  wheels)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site2 .whl/*.whl .whl2/*.whl \
      && $PY -c "import transformers, av, datasets, vllm; print('transformers', transformers.__version__, 'av', av.__version__, 'datasets', datasets.__version__)" \
      && demo_assets && log "demo critic and clips ready" ;;
  agree)
    demo_assets || exit 1
    log "agreement: demo critic"
    $PY benchmarks/agreement.py --label demo-critic --model "$W/build/models/tiny-critic" --clips "$W/clips/videos" \
      --out "$OUT/agreement-demo.json" -- --device cuda --dtype bfloat16 --batch-size 8 --enforce-eager \
      --gpu-memory-utilization 0.3 --max-model-len 4096 2>&1 | tail -20
    log "save the 7B shape with seeded random weights"
    [ -f "$W/m7b/model.safetensors.index.json" ] || $PY -m recipe_lib.cli tiny-model --arch qwen2.5-vl-7b \
      --out "$W/m7b" --seed 0 --device cuda
    log "agreement: 7B shape"
    $PY benchmarks/agreement.py --label qwen2.5-vl-7b-seeded --model "$W/m7b" --clips "$W/clips7b/videos" \
      --out "$OUT/agreement-7b.json" -- --profile full --device cuda --dtype bfloat16 --batch-size 8 \
      --fps 4 --total-pixels 1605632 --gpu-memory-utilization 0.5 --max-model-len 8192 --enforce-eager 2>&1 | tail -20
    log "done" ;;
  agree32)
    demo_assets || exit 1
    for dt in float32; do
      $PY benchmarks/agreement.py --label demo-critic-$dt --model "$W/build/models/tiny-critic" --clips "$W/clips/videos" \
        --out "$OUT/agreement-demo-$dt.json" -- --device cuda --dtype $dt --batch-size 8 --enforce-eager \
        --gpu-memory-utilization 0.3 --max-model-len 4096 2>&1 | grep -v "^(EngineCore\|^INFO\|^WARNING" | tail -8
      $PY benchmarks/agreement.py --label qwen2.5-vl-7b-seeded-$dt --model "$W/m7b" --clips "$W/clips7b/videos" \
        --out "$OUT/agreement-7b-$dt.json" -- --profile full --device cuda --dtype $dt --batch-size 4 --fps 4 \
        --total-pixels 1605632 --gpu-memory-utilization 0.6 --max-model-len 8192 --enforce-eager 2>&1 \
        | grep -v "^(EngineCore\|^INFO\|^WARNING" | tail -8
    done
    rm -rf "$OUT"/agreement-*/ ;;
  bench)
    [ -f "$W/cfg7b/config.json" ] || $PY -m recipe_lib.cli tiny-model --arch qwen2.5-vl-7b --config-only --out "$W/cfg7b"
    log "vLLM rows"
    timeout 330 $PY benchmarks/bench_vllm.py --model "$W/cfg7b" --dummy --out "$OUT/bench-vllm.json" --batch 64 \
      ${BENCH_ONLY:+--only $BENCH_ONLY} 2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore" | tail -25
    [ -n "${VLLM_ONLY:-}" ] && exit 0
    log "transformers rows"
    timeout 240 $PY benchmarks/bench_scoring.py --arch qwen2.5-vl-7b --random-weights --device cuda \
      --out "$OUT/bench-hf.json" --time-limit 200 --only 2k/expected/bs16/fast 7.8k/expected/bs8/fast \
      2k/generate/bs16/graph 2k/thinking/bs32/graph 2k/generate/bs1/naive 2>&1 | tail -25
    log "done" ;;
  serve)
    demo_assets || exit 1
    log "vllm serve (demo critic)"
    $PY -m vllm.entrypoints.openai.api_server --model "$W/build/models/tiny-critic" --served-model-name critic \
      --host 127.0.0.1 --port 8011 --dtype bfloat16 --gpu-memory-utilization 0.3 --max-model-len 4096 --enforce-eager \
      > "$OUT/serve.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 120); do curl -sf http://127.0.0.1:8011/v1/models >/dev/null && break; sleep 1; done
    $PY benchmarks/agreement.py --label served-demo-critic --a hf --b openai --model "$W/build/models/tiny-critic" \
      --clips "$W/clips/videos" --out "$OUT/agreement-served.json" -- --device cuda --dtype bfloat16 \
      --base-url http://127.0.0.1:8011/v1 --served-model critic --concurrency 8 2>&1 | tail -20
    kill $SERVER; wait $SERVER 2>/dev/null
    tail -5 "$OUT/serve.log"
    log "done" ;;
  cosmos-install)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site3 .cosmos/wheels/*.whl \
      && mkdir -p /tmp/redis && cp -r .cosmos/redis/* /tmp/redis/ && chmod +x /tmp/redis/bin/* \
      && redis-server --version && $PY -c "import cosmos_rl.policy.config; print('cosmos-rl ok')" \
      && $PY -m recipe_lib.cli cosmos check --kind grpo --gpus 1 ;;
  cosmos-demo)
    demo_assets || exit 1
    C=$W/cos; mkdir -p "$C"
    log "demo conversations"
    $PY -m recipe_lib.cli train demo-data >/dev/null || exit 1
    CONV=$W/build/data/conversations
    EVAL=$($PY -c "from recipe_lib.demo import demo_eval_split; print(demo_eval_split())")
    nvidia-smi --query-gpu=memory.used --format=csv,noheader -lms 500 > "$C/mem-demo.csv" &
    SMI=$!
    log "render + launch SFT (demo critic, 1 GPU)"
    $PY -m recipe_lib.cli cosmos render --kind sft --gpus 1 --model "$W/build/models/tiny-critic" \
      --dataset "$CONV/sft/train" --output-dir "$C/sft-demo" --out "$C/sft-demo.toml" \
      --set train.max_num_steps=20 --set train.train_batch_per_replica=16 --set train.train_policy.mini_batch=4 \
      --set train.optm_lr=5e-4 --set train.optm_warmup_steps=2 --set train.ckpt.save_freq=10 \
      --set train.ckpt.save_mode=sync --set custom.vision.fps=4 --set custom.vision.max_pixels=12544 \
      --set custom.vision.total_pixels=401408 --set policy.model_max_length=4096 || exit 1
    timeout 300 $PY -m recipe_lib.cli cosmos launch "$C/sft-demo.toml" --run --log-dir "$C/logs-sft-demo" \
      > "$C/launch-sft-demo.log" 2>&1; echo "launch rc=$?"
    grep -iE "step|loss|error|Traceback|memory" "$C/launch-sft-demo.log" | tail -25
    find "$C/sft-demo" -maxdepth 4 | head -30
    log "sweep the cosmos-rl checkpoints"
    timeout 200 $PY -m recipe_lib.cli sweep "$C/sft-demo" --data "$EVAL" --device cuda --limit 64 --mode expected --fps 4 --max-pixels 12544 --max-frames 8 2>&1 | tail -15
    kill $SMI
    echo "peak MiB: $(sort -n "$C/mem-demo.csv" | tail -1)"
    tar czf "$OUT/cosmos-demo.tgz" -C "$C" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' . ;;
  cosmos-7b)
    C=$W/cos; mkdir -p "$C"
    [ -f "$W/m7b/model.safetensors.index.json" ] || $PY -m recipe_lib.cli tiny-model --arch qwen2.5-vl-7b \
      --out "$W/m7b" --seed 0 --device cuda
    [ -d "$W/clips7b/videos" ] || $PY -m recipe_lib.cli synth --n 16 --width 448 --height 252 --frames 48 --fps 16 \
      --seed 2 --out "$W/clips7b" >/dev/null
    $PY -m recipe_lib.cli prepare conversations --data "$W/clips7b/dataset" --kind sft --out "$C/conv7b" | tail -2
    nvidia-smi --query-gpu=memory.used --format=csv,noheader -lms 500 > "$C/mem-7b.csv" &
    SMI=$!
    log "render + launch SFT (7B shape, 1 GPU, the recipe's video settings)"
    $PY -m recipe_lib.cli cosmos render --kind sft --gpus 1 --model "$W/m7b" --dataset "$C/conv7b" \
      --output-dir "$C/sft-7b" --out "$C/sft-7b.toml" --set train.max_num_steps=4 \
      --set train.train_batch_per_replica=4 --set train.train_policy.mini_batch=1 --set train.ckpt.save_freq=4 \
      --set train.ckpt.save_mode=sync --set train.ckpt.max_keep=1 || exit 1
    timeout 420 $PY -m recipe_lib.cli cosmos launch "$C/sft-7b.toml" --run --log-dir "$C/logs-sft-7b" \
      > "$C/launch-sft-7b.log" 2>&1; echo "launch rc=$?"
    kill $SMI
    echo "peak MiB: $(sort -n "$C/mem-7b.csv" | tail -1)"
    grep -iE "step|loss|error|Traceback|memory" "$C/launch-sft-7b.log" | tail -25
    find "$C/sft-7b" -maxdepth 4 | head -20
    timeout 150 $PY -m recipe_lib.cli sweep "$C/sft-7b" --data "$W/clips7b/dataset" --device cuda --limit 8 \
      --no-start 2>&1 | tail -8
    tar czf "$OUT/cosmos-7b.tgz" -C "$C" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' \
      --exclude='conv7b' sft-7b.toml launch-sft-7b.log mem-7b.csv logs-sft-7b sft-7b ;;
  agree-all)
    demo_assets || exit 1
    log "agreement: demo critic, float32"
    timeout 150 $PY benchmarks/agreement.py --label demo-critic-float32 --model "$W/build/models/tiny-critic" \
      --clips "$W/clips/videos" --out "$OUT/agreement-demo-float32.json" -- --device cuda --dtype float32 \
      --batch-size 8 --enforce-eager --gpu-memory-utilization 0.3 --max-model-len 4096 2>&1 | tail -7
    [ -f "$W/m7b/model.safetensors.index.json" ] || $PY -m recipe_lib.cli tiny-model --arch qwen2.5-vl-7b \
      --out "$W/m7b" --seed 0 --device cuda
    for dt in float32 bfloat16; do
      log "agreement: 7B shape, $dt"
      timeout 200 $PY benchmarks/agreement.py --label qwen2.5-vl-7b-seeded-$dt --model "$W/m7b" \
        --clips "$W/clips7b/videos" --out "$OUT/agreement-7b-$dt.json" -- --device cuda --dtype $dt \
        --batch-size 4 --fps 4 --total-pixels 1605632 --gpu-memory-utilization 0.6 --max-model-len 8192 \
        --enforce-eager 2>&1 | tail -7
    done
    rm -rf "$OUT"/agreement-*/ ;;
  *) echo "unknown stage $1"; exit 2 ;;
esac
