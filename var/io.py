"""Atomic, safe file I/O used by every stage.

Every artifact is written to a temporary file in the destination directory, flushed and fsync'ed, then renamed
over the final path (`os.replace` is atomic on POSIX), so a stage killed mid-write never leaves a partial file at
its output path. Loading never unpickles arbitrary objects: checkpoints go through
`torch.load(weights_only=True)` and arrays through `np.load(allow_pickle=False)`.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


class ArtifactError(RuntimeError):
    """A required file is missing, truncated, or not what it claims to be. The message names the file."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsync'ed and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp creates 0600; artifacts get the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class OutputGroup:
    """The outputs of one stage, made to appear together: each is written (atomically) to `pending(path)`, a hidden
    name in the same folder, and `output_group` renames them all into place only when its block ends without error.
    So a stage that fails after writing its first output leaves none of them (the file rename of each is atomic;
    the group's renames follow one another within microseconds)."""

    def __init__(self):
        self.pending_paths: dict[Path, Path] = {}

    def pending(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.pending{path.suffix}")    # keeps the suffix (np.savez adds .npz)
        self.pending_paths[tmp] = path
        return tmp


@contextlib.contextmanager
def output_group() -> Iterator[OutputGroup]:
    group = OutputGroup()
    try:
        yield group
    except BaseException:
        for tmp in group.pending_paths:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in group.pending_paths.items():
        if not tmp.exists():
            raise RuntimeError(f"output {path} was never written")
    for tmp, path in group.pending_paths.items():
        os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """np.savez to `path` atomically. Object arrays are refused (they would need pickle to load)."""
    for k, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"array '{k}' has dtype object; it could not be loaded with allow_pickle=False")
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def save_image_grid(path: str | os.PathLike, images_NHW3: np.ndarray, labels_N: np.ndarray, per_row: int = 10,
                    max_rows: int = 32) -> None:
    """A PNG of uint8 (N, H, W, 3) samples: one row per class, the first `per_row` samples of each, for at most
    `max_rows` classes evenly spread over the labels (1000 ImageNet rows would be a 650-megapixel PNG that takes
    minutes to encode and no viewer opens)."""
    from PIL import Image
    classes = np.unique(labels_N)
    if len(classes) > max_rows:
        classes = classes[np.linspace(0, len(classes) - 1, max_rows).round().astype(int)]
    H, W = images_NHW3.shape[1:3]
    grid = np.full((len(classes) * H, per_row * W, 3), 255, np.uint8)
    for r, c in enumerate(classes):
        for j, i in enumerate(np.flatnonzero(labels_N == c)[:per_row]):
            grid[r * H:(r + 1) * H, j * W:(j + 1) * W] = images_NHW3[i]
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def load_npz(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Load every array of an .npz without pickle; a missing file or key is an ArtifactError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"missing file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickle" in str(e).lower():
            raise ArtifactError(f"{path}: contains pickled objects, refused (npz files are loaded with "
                                f"allow_pickle=False)") from e
        raise ArtifactError(f"{path}: not a readable .npz ({e})") from e
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError on truncation
        raise ArtifactError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from e
    missing = [k for k in required if k not in out]
    if missing:
        raise ArtifactError(f"{path}: missing array(s) {missing}; has {sorted(out)}")
    return out


def load_error_reason(e: BaseException) -> str:
    """The informative line of a torch.load failure. A weights-only refusal is reported by what it met (e.g.
    'Unsupported global: GLOBAL posix.system ...'), without torch's advice to retry with weights_only=False."""
    text = str(e)
    m = re.search(r"WeightsUnpickler error: (.*?)(?: Please use|\n|$)", text)
    if m:
        return m.group(1).strip()
    return text.splitlines()[0] if text else ""


def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True: a pickle payload that is not plain tensors/containers is refused."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"missing file: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ArtifactError(f"{path}: refused or unreadable checkpoint ({type(e).__name__}: "
                            f"{load_error_reason(e)})") from e
