"""Shared test helpers: where the reference fixtures live, and CPU determinism."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
PARITY_DEFAULT = "fixture_A_compact.npz"     # lossless copy of the reference fixture_A.pt (tests/data/README.md)


def fixture_paths(name: str) -> list[Path]:
    """The reference file(s) a test reads.

    `name` is a file of the reference folder (`fixture_lr_schedule.json`, `manifest_var_d16.json` ...) or, for
    the forward/sampling parity fixtures, PARITY_DEFAULT. In order:
    * for PARITY_DEFAULT, `$VAR_FIXTURES` when set: one path or several separated by commas or os.pathsep, each a
      fixture in the `fixture_A.pt` format (or its compact `.npz` encoding), e.g. the full shared one;
    * `$VAR_SHARED/fixtures/<name>` when VAR_SHARED is set (the whole reference folder; for PARITY_DEFAULT its
      `fixture_A.pt`);
    * the in-repository copy `tests/data/<name>`.
    A path that does not exist is an error naming it, never a skip."""
    if name == PARITY_DEFAULT and os.environ.get("VAR_FIXTURES"):
        paths = [Path(p.strip()) for p in re.split(f"[,{re.escape(os.pathsep)}]", os.environ["VAR_FIXTURES"])
                 if p.strip()]
        source = "VAR_FIXTURES"
    elif os.environ.get("VAR_SHARED"):
        shared = Path(os.environ["VAR_SHARED"]) / "fixtures"
        paths, source = [shared / ("fixture_A.pt" if name == PARITY_DEFAULT else name)], "VAR_SHARED"
    else:
        paths, source = [DATA / name], "tests/data"
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"reference file(s) not found (from {source}): {', '.join(missing)}")
    return paths


def fixture_path(name: str) -> Path:
    """The single reference file `name` (see fixture_paths)."""
    (path,) = fixture_paths(name)
    return path


@pytest.fixture
def one_thread():
    """The fixtures were recorded with 1 thread; conv results move by ~2e-5 with more."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
