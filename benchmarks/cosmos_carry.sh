#!/usr/bin/env bash
# Build .cosmos/ on a machine with network: what a CUDA machine that has torch 2.11, transformers (carried in .whl/)
# and the vLLM bundle lacks to run cosmos-rl 0.4.7 — its wheel and the packages it imports (Python 3.12, manylinux
# x86-64, no dependencies resolved: the list is what `import cosmos_rl...` loads on that machine) — and a redis-server
# binary with its two libraries, from Debian packages unpacked with dpkg -x (never installed over /).
#
#   bash benchmarks/cosmos_carry.sh            # writes .cosmos/wheels/*.whl and .cosmos/redis/{bin,lib}
#   bash benchmarks/gpu_session.sh cosmos-install   # on the GPU machine, after carrying .cosmos
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.cosmos
mkdir -p "$OUT/wheels" "$OUT/redis/bin" "$OUT/redis/lib" "$OUT/debs"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  --dest "$OUT/wheels" \
  cosmos-rl==0.4.7 tensordict==0.7.2 torchao==0.18.0 redis==8.1.0 StrEnum==0.5.0 nest-asyncio==1.6.0 \
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2 liger_kernel==0.8.5 \
  diffusers==0.39.0 kernels==0.12.3 boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3 jmespath==1.1.0 \
  blobfile==3.3.0 pycryptodomex==3.24.2 beautifulsoup4==4.15.0 soupsieve==4.1.3 defusedxml==0.7.1 \
  orjson==3.13.0 narwhals==2.29.0 pynvml==13.0.1 nvidia-ml-py==13.615.71 threadpoolctl==3.8.0
(cd "$OUT/debs" && apt-get download redis-tools libjemalloc2 liblzf1 2>/dev/null)
rm -rf "$OUT/debs/x" && mkdir -p "$OUT/debs/x"
for deb in "$OUT"/debs/*.deb; do dpkg -x "$deb" "$OUT/debs/x"; done
cp "$OUT/debs/x/usr/bin/redis-check-rdb" "$OUT/redis/bin/redis-server"  # one binary; it acts by its name
cp "$OUT/debs/x/usr/bin/redis-cli" "$OUT/redis/bin/"
cp -P "$OUT"/debs/x/usr/lib/x86_64-linux-gnu/{libjemalloc.so.2,liblzf.so.1}* "$OUT/redis/lib/" 2>/dev/null || \
  cp -L "$OUT"/debs/x/usr/lib/x86_64-linux-gnu/{libjemalloc.so.2,liblzf.so.1} "$OUT/redis/lib/"
rm -rf "$OUT/debs"
LD_LIBRARY_PATH="$OUT/redis/lib" "$OUT/redis/bin/redis-server" --version
du -sh "$OUT/wheels" "$OUT/redis"
