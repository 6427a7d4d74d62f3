"""Compile the C++ ops in ``csrc/`` on first use and load them into this process.

The sources are compiled with ``torch.utils.cpp_extension.load`` into a cache folder keyed by the
torch version and a hash of the sources and compiler flags, so later processes only load the
finished library. The folder is ``$PYALIGN_CACHE/ops/<key>`` when ``PYALIGN_CACHE`` is set and
``$XDG_CACHE_HOME/pyalign/ops/<key>`` (default ``~/.cache/pyalign/ops/<key>``) otherwise.
``cpp_extension`` holds a lock file in that folder while it builds, so concurrent processes wait
for one build instead of racing.

``python -m pyalign.ops --cuda-compile-only`` compiles the CUDA sources to object files with
nvcc and the flags ``cpp_extension`` would use, which needs no GPU: CI runs it through
``bench/build_cuda_ops.sh``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import logging
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.utils.cpp_extension

from pyalign.ops import logprobs, losses

logger = logging.getLogger(__name__)

LIBRARY_NAME = "pyalign_ops"

# The file that marks a folder as pyalign's C++ sources.
_MARKER_SOURCE = "logprobs.cpp"
_HASHED_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")
# -fopenmp-simd enables only the `omp simd` loop pragmas (vectorised reductions in the CPU
# kernels), not the OpenMP runtime.
_CXX_FLAGS = ("-O3", "-fopenmp-simd")
_CUDA_FLAGS = ("-O3",)


class NativeOpsBuildError(RuntimeError):
    """Raised when the C++ ops cannot be found, compiled or loaded."""


@dataclass(frozen=True)
class NativeLibrary:
    """A loaded build of the C++ ops."""

    path: Path
    device_types: tuple[str, ...]  # torch device types with kernels, such as ("cpu",)

    def describe(self) -> str:
        devices = ", ".join(device.upper() for device in self.device_types)
        return f"native C++ ({devices}) from {self.path}"


_lock = threading.Lock()
_library: NativeLibrary | None = None
_build_error: NativeOpsBuildError | None = None


def source_dir_candidates() -> list[Path]:
    """List the folders that may contain the C++ sources, in search order.

    A checkout or editable install has ``csrc/`` beside the ``pyalign/`` package folder. A wheel
    installs ``csrc/`` at its root, which is the same folder relative to the package.
    """
    package_parent = Path(__file__).resolve().parents[2]
    candidates = [package_parent / "csrc"]
    for scheme_path in ("purelib", "platlib"):
        candidates.append(Path(sysconfig.get_paths()[scheme_path]) / "csrc")

    unique: list[Path] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


def find_source_dir(candidates: Sequence[Path] | None = None) -> Path:
    """Return the first candidate folder that contains the C++ sources."""
    candidates = source_dir_candidates() if candidates is None else list(candidates)
    for candidate in candidates:
        if (candidate / _MARKER_SOURCE).is_file():
            return candidate

    looked_in = "\n".join(f"  {candidate}" for candidate in candidates)
    raise NativeOpsBuildError(
        f"pyalign's C++ sources ({_MARKER_SOURCE}) were not found; looked in:\n{looked_in}\n"
        "Reinstall pyalign (the wheel ships csrc/ beside the package) or select the "
        "plain-PyTorch ops with implementation='torch'."
    )


def collect_sources(source_dir: Path, with_cuda: bool) -> list[Path]:
    """Return the files to compile: the shared and CPU sources, plus cuda/ when requested."""
    sources = sorted(source_dir.glob("*.cpp")) + sorted((source_dir / "cpu").glob("*.cpp"))
    if with_cuda:
        cuda_dir = source_dir / "cuda"
        sources += sorted(cuda_dir.glob("*.cpp")) + sorted(cuda_dir.glob("*.cu"))
    return sources


def build_key(source_dir: Path, with_cuda: bool) -> str:
    """Return the cache key: the torch version and a hash of every source, header and flag."""
    digest = hashlib.sha256()
    for path in sorted(source_dir.rglob("*")):
        if path.is_file() and path.suffix in _HASHED_SUFFIXES:
            digest.update(path.relative_to(source_dir).as_posix().encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    digest.update(repr((_CXX_FLAGS, _CUDA_FLAGS, with_cuda)).encode())
    return f"{torch.__version__}-{digest.hexdigest()[:16]}"


def cache_root() -> Path:
    """Return the folder under which each build of the ops gets its own subfolder."""
    pyalign_cache = os.environ.get("PYALIGN_CACHE")
    if pyalign_cache:
        return Path(pyalign_cache).expanduser() / "ops"
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg_cache).expanduser() / "pyalign" / "ops"


def build_library(source_dir: Path, root: Path) -> NativeLibrary:
    """Compile the sources in ``source_dir`` (or reuse a cached build) and load the library.

    Raises NativeOpsBuildError with the compiler output when compilation fails.
    """
    # CUDA kernels are compiled only where torch can run them. A missing CUDA toolkit then
    # fails the build loudly instead of leaving CUDA tensors without kernels.
    has_cuda_sources = any((source_dir / "cuda").glob("*.cu"))
    with_cuda = has_cuda_sources and torch.cuda.is_available()
    sources = collect_sources(source_dir, with_cuda)
    build_dir = root / build_key(source_dir, with_cuda)
    build_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    try:
        library_path = torch.utils.cpp_extension.load(
            name=LIBRARY_NAME,
            sources=[str(source) for source in sources],
            extra_cflags=list(_CXX_FLAGS),
            extra_cuda_cflags=list(_CUDA_FLAGS),
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        # cpp_extension puts the compiler output in the message of its RuntimeError.
        log_path = build_dir / "build_error.log"
        log_path.write_text(str(error))
        raise NativeOpsBuildError(
            f"failed to compile pyalign's C++ ops from {source_dir} in {build_dir} "
            f"(output saved to {log_path}); fix the toolchain or select the plain-PyTorch ops "
            f"with implementation='torch'. Output:\n{error}"
        ) from error

    device_types = ("cpu", "cuda") if with_cuda else ("cpu",)
    library = NativeLibrary(path=Path(library_path), device_types=device_types)
    elapsed = time.perf_counter() - started
    logger.info("loaded %s in %.1f s", library.describe(), elapsed)
    return library


def load_library() -> NativeLibrary:
    """Build (on first use) and load the C++ ops once per process; thread-safe.

    A failed build is remembered, and later calls raise the same NativeOpsBuildError instead
    of compiling again.
    """
    global _library, _build_error
    if _library is not None:
        return _library
    with _lock:
        if _library is not None:
            return _library
        if _build_error is not None:
            raise _build_error
        try:
            library = build_library(find_source_dir(), cache_root())
        except NativeOpsBuildError as error:
            _build_error = error
            raise
        logprobs.register_python_kernels()
        losses.register_python_kernels()
        _library = library
    return _library


# Compiling the CUDA sources without a GPU

# The default target of a compile-only build: Hopper (H100, H200), compute capability 9.0.
DEFAULT_CUDA_ARCHS = "9.0"


def find_nvcc(nvcc: str | None = None) -> Path:
    """Return the nvcc to use: ``nvcc``, ``$CUDA_HOME/bin/nvcc``, the PATH's, or a pip one.

    The pip packages ``nvidia-cuda-nvcc`` and friends install nvcc under ``nvidia/cu<major>``
    in site-packages, beside the CUDA libraries torch depends on.
    """
    candidates: list[Path] = []
    if nvcc:
        candidates.append(Path(nvcc))
    if os.environ.get("CUDA_HOME"):
        candidates.append(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc")
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(Path(on_path))
    for site_dir in _site_dirs():
        candidates.extend(sorted(site_dir.glob("nvidia/cu*/bin/nvcc")))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise NativeOpsBuildError(
        "nvcc was not found (looked at --nvcc, $CUDA_HOME/bin, the PATH and site-packages); "
        "install a CUDA toolkit, or the pip packages bench/build_cuda_ops.sh installs"
    )


def _site_dirs() -> list[Path]:
    """Return the folder torch is installed in, then this interpreter's site-packages.

    torch's CUDA dependencies sit beside torch, which is not this environment's site-packages
    in a virtual environment made with ``--system-site-packages``.
    """
    paths = [Path(torch.__file__).resolve().parent.parent]
    paths += [Path(sysconfig.get_paths()[name]) for name in ("purelib", "platlib")]
    paths += [Path(path) for path in site.getsitepackages()]
    unique = []
    for path in paths:
        if path not in unique:
            unique.append(path)
    return unique


def cuda_include_dirs(nvcc: Path) -> list[Path]:
    """Return the folders with the CUDA library headers ATen's CUDA headers include.

    A full toolkit has them beside nvcc. The pip nvcc packages have the compiler and runtime
    headers only, so cuBLAS, cuSPARSE and cuSOLVER headers come from the ``nvidia`` folder in
    site-packages where torch's CUDA dependencies put them.
    """
    folders = [nvcc.parent.parent / "include"]
    folders += [
        path.parent for site in _site_dirs() for path in site.glob("nvidia/*/include/cublas_v2.h")
    ]
    unique = []
    for folder in folders:
        if folder.is_dir() and folder not in unique:
            unique.append(folder)
    return unique


def cuda_arch_flags(archs: str) -> list[str]:
    """Turn "8.0;9.0" (TORCH_CUDA_ARCH_LIST's format) into nvcc -gencode flags."""
    flags = []
    for arch in archs.replace(",", ";").replace(" ", ";").split(";"):
        if not arch:
            continue
        number = arch.replace(".", "").removesuffix("+PTX")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
    return flags


def cuda_compile_commands(
    source_dir: Path, output_dir: Path, nvcc: Path, archs: str
) -> list[list[str]]:
    """Return one nvcc command per .cu file, with the flags cpp_extension would pass it."""
    includes = [str(path) for path in torch.utils.cpp_extension.include_paths()]
    includes += [str(path) for path in cuda_include_dirs(nvcc)]
    common = [
        f"-DTORCH_EXTENSION_NAME={LIBRARY_NAME}",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        *(flag for path in includes for flag in ("-isystem", path)),
        *torch.utils.cpp_extension.COMMON_NVCC_FLAGS,
        "--compiler-options",
        "-fPIC",
        "-std=c++20",
        *_CUDA_FLAGS,
        *cuda_arch_flags(archs),
    ]
    commands = []
    for source in sorted((source_dir / "cuda").glob("*.cu")):
        target = output_dir / f"{source.stem}.cuda.o"
        commands.append([str(nvcc), "-c", str(source), "-o", str(target), *common])
    return commands


def compile_cuda_objects(
    output_dir: Path, nvcc: str | None = None, archs: str = DEFAULT_CUDA_ARCHS
) -> list[Path]:
    """Compile csrc/cuda/*.cu to object files, which needs nvcc but no GPU and no linking.

    This checks in CI that the CUDA kernels compile against the installed torch. Raises
    NativeOpsBuildError with nvcc's output when one fails.
    """
    source_dir = find_source_dir()
    nvcc_path = find_nvcc(nvcc)
    output_dir.mkdir(parents=True, exist_ok=True)
    commands = cuda_compile_commands(source_dir, output_dir, nvcc_path, archs)
    # One nvcc per source file at a time, as many as there are cores.
    workers = max(1, min(len(commands), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_run_nvcc, commands))

    failures = [message for message in results if message is not None]
    if failures:
        raise NativeOpsBuildError("\n\n".join(failures))
    return [Path(command[4]) for command in commands]


def _run_nvcc(command: list[str]) -> str | None:
    """Run one nvcc command; return an error message on failure, None on success."""
    source = command[2]
    logger.info("compiling %s", source)
    completed = subprocess.run(command, capture_output=True, text=True)
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        return (
            f"nvcc failed on {source} (exit status {completed.returncode}):\n{output}\n"
            f"command: {' '.join(command)}"
        )
    if output.strip():
        logger.warning("nvcc output for %s:\n%s", source, output)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m pyalign.ops [--cuda-compile-only] [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m pyalign.ops",
        description="Build pyalign's C++ ops, or compile their CUDA sources without a GPU.",
    )
    parser.add_argument(
        "--cuda-compile-only",
        action="store_true",
        help="compile csrc/cuda/*.cu to object files with nvcc, without linking or a GPU",
    )
    parser.add_argument(
        "--nvcc", help="path of nvcc (default: $CUDA_HOME/bin, then the PATH, then site-packages)"
    )
    parser.add_argument(
        "--arch",
        default=os.environ.get("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS),
        help="compute capabilities, as in TORCH_CUDA_ARCH_LIST (default: %(default)s)",
    )
    parser.add_argument(
        "--output", default="build/cuda-objects", help="folder for the object files"
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    started = time.perf_counter()
    try:
        if arguments.cuda_compile_only:
            objects = compile_cuda_objects(Path(arguments.output), arguments.nvcc, arguments.arch)
            described = ", ".join(str(path) for path in objects)
        else:
            described = load_library().describe()
    except NativeOpsBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"built {described} in {time.perf_counter() - started:.1f} s")
    return 0
