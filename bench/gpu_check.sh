#!/usr/bin/env bash
# Build pyalign's ops with their CUDA kernels, run the GPU tests and the GPU benchmark: one
# prepared run on one GPU, offline, within 8 minutes (each stage has its own time limit).
#
# Needs python3 with torch (CUDA), pytest and nvcc (found through CUDA_HOME or the PATH, as
# torch.utils.cpp_extension finds it). Liger-Kernel is optional: where a .whl/ folder in the
# repository holds its wheel (pip download --no-deps liger-kernel), it is installed into
# /tmp/site first; without it the benchmark reports Liger as skipped.
#
# Writes its logs and the benchmark's JSON lines to $OUT (or build/gpu-check).
#
# Usage: bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

export PYTHONUNBUFFERED=1
export PYALIGN_CACHE="${PYALIGN_CACHE:-/tmp/pyalign-cache}"
# H100 and H200; a build with no target named would run Hopper-less PTX.
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
results="${OUT:-build/gpu-check}"
mkdir -p "$results"
status=0

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

echo "== build (CPU and CUDA kernels), at most 240 s"
timeout 240 python3 -m pyalign.ops 2>&1 | tee "$results/build.log"
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    echo "error: the build failed or timed out; see $results/build.log" >&2
    exit 1
fi

echo "== GPU tests (pytest -m gpu), at most 100 s"
timeout 100 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_cuda.py \
    2>&1 | tee "$results/gpu_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== GPU benchmark: bfloat16, H = 4096, V = 128256, trainable head, at most 120 s"
timeout 120 python3 bench/logprob_op.py --device cuda --dtype bfloat16 --hidden 4096 \
    --vocab 128256 --tokens 4096 8192 16384 --pairs 1 --head trainable \
    --methods naive liger pyalign --repeats 5 --timeout 60 \
    --json-output "$results/gpu_bench.jsonl" 2>&1 | tee "$results/gpu_bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

exit "$status"
