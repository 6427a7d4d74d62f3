#!/usr/bin/env bash
# Compile pyalign's CUDA kernels (csrc/cuda/*.cu) to object files on a machine without a GPU, so
# CI catches CUDA code that no longer compiles against the installed torch.
#
# Uses the nvcc that `python3 -m pyalign.ops` finds ($CUDA_HOME, the PATH, site-packages). Where
# there is none, installs the CUDA compiler from PyPI into build/cuda-toolkit (gitignored), at the
# CUDA version torch was built with: nvidia-cuda-nvcc (nvcc), nvidia-nvvm (cicc),
# nvidia-cuda-crt, nvidia-cuda-runtime and nvidia-cuda-cccl (headers). The cuBLAS, cuSPARSE and
# cuSOLVER headers come from torch's own CUDA dependencies in site-packages.
#
# Usage: bench/build_cuda_ops.sh [--arch "8.0;9.0"] [--output DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

nvcc_arguments=()
if ! python3 -c "from pyalign.ops._build import find_nvcc; find_nvcc()" 2>/dev/null; then
    cuda_version=$(python3 -c "import torch; print(torch.version.cuda or '')")
    if [ -z "$cuda_version" ]; then
        echo "error: this torch was built without CUDA, so there is no CUDA version to compile for" >&2
        exit 1
    fi
    toolkit=build/cuda-toolkit
    nvcc=$(ls "$toolkit"/nvidia/cu*/bin/nvcc 2>/dev/null | head -n 1 || true)
    # Reuse an earlier install when it is the right CUDA version.
    if [ -z "$nvcc" ] || ! "$nvcc" --version | grep -q "release ${cuda_version}"; then
        echo "installing the CUDA ${cuda_version} compiler from PyPI into ${toolkit}"
        rm -rf "$toolkit"
        python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$toolkit" \
            "nvidia-cuda-nvcc==${cuda_version}.*" "nvidia-nvvm==${cuda_version}.*" \
            "nvidia-cuda-crt==${cuda_version}.*" "nvidia-cuda-runtime==${cuda_version}.*" \
            "nvidia-cuda-cccl==${cuda_version}.*"
        nvcc=$(ls "$toolkit"/nvidia/cu*/bin/nvcc | head -n 1)
    fi
    nvcc_arguments=(--nvcc "$nvcc")
fi

python3 -m pyalign.ops --cuda-compile-only "${nvcc_arguments[@]}" "$@"
