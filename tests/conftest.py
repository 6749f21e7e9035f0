"""Shared test helpers: where the reference fixtures live, and CPU determinism."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The read-only reference material (`../shared` beside the checkout unless VAR_SHARED says otherwise)."""
    return Path(os.environ.get("VAR_SHARED", REPO.parent / "shared"))


@pytest.fixture
def one_thread():
    """The fixtures were recorded with 1 thread; conv results move by ~2e-5 with more."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
