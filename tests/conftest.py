"""Fixtures shared by the whole suite: fixed seeds and the location of the shared assets."""

import os
import random
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """Return the shared assets folder: ``$PYALIGN_SHARED`` or ``../shared`` beside the repo."""
    return Path(os.environ.get("PYALIGN_SHARED", REPO_ROOT.parent / "shared"))


def require_shared(relative: str) -> Path:
    """Return a shared asset's path, or skip the test with the reason when it is absent."""
    path = shared_dir() / relative
    if not path.exists():
        pytest.skip(f"shared asset {relative} not found under {shared_dir()} (set PYALIGN_SHARED)")
    return path


@pytest.fixture(autouse=True)
def seed():
    """Seed Python, NumPy and torch before every test so results repeat."""
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return 0
