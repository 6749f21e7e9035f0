"""Third-party weights files: checked against a pinned sha256 and loaded so that they cannot run code.

A pickle names Python callables and unpickling calls them, so a weights file from elsewhere (the released VAR /
VQVAE checkpoints, torch-fidelity's Inception, torchvision's VGG16 and the LPIPS heads, clean-fid's Inception) is
code until shown otherwise. Every such file goes through `load_weights`:
  * The file is hashed and loaded through one open handle, so the bytes checked are the bytes loaded.
  * `expected_sha256` pins it: the full 64-hex digest (the params keys `<path key>_sha256`), or an 8+ hex prefix
    where a file name carries one by convention (torch.hub's `<name>-<first 8 hex of sha256>.pth`). A mismatch is
    a `WeightsHashError` naming the file, both digests and the params key.
  * It is unpickled by `torch.load(weights_only=True)`, which builds tensors and plain containers only: a pickle
    that names any other callable (a `__reduce__` payload) is refused before anything is called, and so is a
    TorchScript archive. Both are `RefusedWeightsError`.
  * The digest actually loaded is returned, so stages record it next to their outputs.

TorchScript archives (clean-fid's Inception) cannot be read without running their code: `torch.jit.load` executes
the archive's TorchScript, including a `__setstate__` at load time, and TorchScript can call `aten::save` (write any
file) and `aten::from_file` (read any file). `read_pinned_torchscript` therefore hands out an archive's bytes only
when its full sha256 is pinned and matches, and refuses archives whose code uses those operators or hooks.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from var.config.loader import check_sha256  # noqa: F401 (re-exported)
from var.io import ArtifactError, load_error_reason

_FULL_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA256_OR_PREFIX = re.compile(r"[0-9a-f]{8,64}")


class MissingWeightsError(FileNotFoundError):
    """A weights file is not on disk; the message names the file and the params key that points to it."""


class WeightsHashError(ValueError):
    """A weights file's sha256 is not the pinned one; the message names the file and both digests."""


class RefusedWeightsError(ArtifactError):
    """A weights file would run code when loaded (pickled callables, TorchScript), or is not pinned where loading
    it needs a pin; the message names the file and the reason."""


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return _sha256_handle(f)


def _sha256_handle(f: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 22), b""):
        h.update(chunk)
    return h.hexdigest()


def _pin_key(key: str) -> str:
    """`models.var-d16.pretrained` -> `models.var-d16.pretrained_sha256`; `x.weights[1]` -> `x.weights_sha256[1]`."""
    base, bracket, index = key.partition("[")
    return f"{base}_sha256{bracket}{index}"


def _existing(path: str | os.PathLike | None, key: str, what: str, hint: str) -> Path:
    if path is None or str(path) == "":
        raise MissingWeightsError(f"{what}: no file given (params: {key}).{' ' + hint if hint else ''}")
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"{what} not found at {path} (params: {key}).{' ' + hint if hint else ''}")
    return path


def _check_digest(path: Path, digest: str, expected: str | None, key: str) -> None:
    if not expected:
        return
    want = expected.lower()
    if not _SHA256_OR_PREFIX.fullmatch(want):
        raise ValueError(f"{_pin_key(key)}: expected a sha256 (64 hex digits) or an 8+ hex prefix, got {expected!r}")
    if digest != want if len(want) == 64 else not digest.startswith(want):
        kind = "sha256" if len(want) == 64 else "sha256 prefix"
        raise WeightsHashError(f"{path}: sha256 {digest} does not match the expected {kind} {want} "
                               f"({_pin_key(key)}); refusing to load it")


def verify_weights(path: str | os.PathLike | None, expected_sha256: str | None = "", *, key: str,
                   what: str = "weights file", hint: str = "") -> tuple[Path, str]:
    """(path, sha256) of an existing file whose digest matches `expected_sha256` (when given)."""
    path = _existing(path, key, what, hint)
    with open(path, "rb") as f:
        digest = _sha256_handle(f)
    _check_digest(path, digest, expected_sha256, key)
    return path, digest


def load_weights(path: str | os.PathLike | None, expected_sha256: str | None = "", *, key: str,
                 what: str = "weights file", hint: str = "", map_location: str | torch.device = "cpu"
                 ) -> tuple[Any, str]:
    """(object, sha256): the file's tensors/containers, loaded with weights_only=True after the sha256 check.

    key: the params key holding the path (named in every error; its pin is `<key>_sha256`).
    expected_sha256: full digest or 8+ hex prefix; '' or None: not pinned (the digest is still returned)."""
    path = _existing(path, key, what, hint)
    with open(path, "rb") as f:
        digest = _sha256_handle(f)
        _check_digest(path, digest, expected_sha256, key)
        f.seek(0)
        if _is_torchscript(f):     # refused here already, whatever order torch.load checks things in
            raise RefusedWeightsError(f"{path} ({key}): is a TorchScript archive, refused: loading it would run "
                                      f"its code; a {what} must be a plain state dict")
        f.seek(0)
        try:
            obj = torch.load(f, map_location=map_location, weights_only=True)
        except Exception as e:
            reason = load_error_reason(e)
            if "TorchScript" in str(e):
                raise RefusedWeightsError(f"{path} ({key}): is a TorchScript archive, refused: loading it would run "
                                          f"its code; a {what} must be a plain state dict") from None
            if "Weights only load failed" in str(e):
                raise RefusedWeightsError(f"{path} ({key}): refused, it holds objects other than tensors and plain "
                                          f"containers, and unpickling them would run code ({reason})") from None
            raise ArtifactError(f"{path} ({key}): not a readable {what} ({type(e).__name__}: {reason})") from e
    return obj, digest


def _is_torchscript(f: BinaryIO) -> bool:
    """A zip whose entries include TorchScript code (`<archive>/code/...`); torch.save archives have none."""
    if not zipfile.is_zipfile(f):
        return False
    f.seek(0)
    with zipfile.ZipFile(f) as z:
        return any("/code/" in n for n in z.namelist())


# --------------------------------------------------------------------------------------------- TorchScript
# TorchScript operators that reach the file system, and the hook that runs at load time. A crafted archive can
# spell them in its code/*.py; an archive using any of them is refused even when pinned (the genuine Inception
# translation has no reason to). This list is a second line behind the pin, not a proof of safety.
_TORCHSCRIPT_DENIED = re.compile(r"\b(__setstate__|save|from_file|load_tensor)\b")


def read_pinned_torchscript(path: str | os.PathLike | None, expected_sha256: str | None, *, key: str,
                            what: str = "TorchScript archive", hint: str = "") -> tuple[bytes, str]:
    """(bytes, sha256) of a TorchScript archive that may be handed to `torch.jit.load`.

    Refused unless `expected_sha256` is the full digest of the file (a prefix is not enough to vouch for code),
    and refused if the archive's code uses file-system operators or `__setstate__`. Load the returned bytes (not
    the path), so the archive loaded is the one checked."""
    path = _existing(path, key, what, hint)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not expected_sha256 or not _FULL_SHA256.fullmatch(expected_sha256.lower()):
        raise RefusedWeightsError(
            f"{path} ({key}): a TorchScript archive runs its own code when loaded (torch.jit.load executes it, and "
            f"it can read and write files), so it is loaded only with its full sha256 pinned; got "
            f"{_pin_key(key)}={expected_sha256 or ''!r}. This file's sha256 is {digest}: check it against the copy "
            f"you trust, then set {_pin_key(key)}: {digest}")
    _check_digest(path, digest, expected_sha256, key)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
            code = [n for n in names if "/code/" in n and n.endswith(".py")]
            if not code or not any(n.endswith("/data.pkl") for n in names):
                raise RefusedWeightsError(f"{path} ({key}): not a TorchScript archive (no code/*.py and data.pkl)")
            for n in code:
                hit = _TORCHSCRIPT_DENIED.search(z.read(n).decode("utf-8", "replace"))
                if hit:
                    raise RefusedWeightsError(f"{path} ({key}): refused, its TorchScript ({n}) uses {hit.group(1)!r}, "
                                              f"which runs at load time or reaches the file system")
    except zipfile.BadZipFile as e:
        raise RefusedWeightsError(f"{path} ({key}): not a TorchScript archive ({e})") from None
    return data, digest
