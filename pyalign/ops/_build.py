"""Compile the C++ ops in ``csrc/`` on first use and load them into this process.

The sources are compiled with ``torch.utils.cpp_extension.load`` into a cache folder keyed by the
torch version and a hash of the sources and compiler flags, so later processes only load the
finished library. The folder is ``$PYALIGN_CACHE/ops/<key>`` when ``PYALIGN_CACHE`` is set and
``$XDG_CACHE_HOME/pyalign/ops/<key>`` (default ``~/.cache/pyalign/ops/<key>``) otherwise.
``cpp_extension`` holds a lock file in that folder while it builds, so concurrent processes wait
for one build instead of racing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.utils.cpp_extension

from pyalign.ops import logprobs

logger = logging.getLogger(__name__)

LIBRARY_NAME = "pyalign_ops"

# The file that marks a folder as pyalign's C++ sources.
_MARKER_SOURCE = "logprobs.cpp"
_HASHED_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")
_CXX_FLAGS = ("-O3",)
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
        _library = library
    return _library
