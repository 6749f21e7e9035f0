"""The standard evaluator's Inception network, through torch-fidelity's `inception-v3-compat`, strictly offline.

Weights. torch-fidelity's port of TF Inception 2015-12-05 (the graph the standard evaluator uses):
    file name : weights-inception-2015-12-05-6726825d.pth
    origin    : https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth
                (`URL_INCEPTION_V3` in torch_fidelity/feature_extractor_inceptionv3.py, torch-fidelity 0.3.0 and 0.4.0)
    sha256    : starts with 6726825d. torch-fidelity ships no full hash; the 8 hex digits in the file name are the
                torch.hub convention (`check_hash`) for a sha256 prefix. The full digest and the exact byte size were
                not available on the machine this was written on (no network), so the size is not verified either:
                the layout holds 566 tensors, 23,885,392 float32 values (95,542,320 bytes), and a torch.save of it
                is 95,731,847 bytes (~91.3 MiB), so expect about that. Record the full digest once and pass it
                as `expected_sha256` to pin it.
    where     : the path given to `InceptionFeatures(weights_path=...)`, else torch.hub's cache,
                `<torch.hub.get_dir()>/checkpoints/weights-inception-2015-12-05-6726825d.pth` (the file torch-fidelity
                itself would use). A missing file raises `MissingWeightsError`; nothing is ever downloaded, because
                torch-fidelity only downloads when `feature_extractor_weights_path` is None and we never pass None.

Features (all float32, computed from uint8 (B, 3, H, W) images, TF1-exact bilinear resize to 299):
    pool    (B, 2048): pool3, for FID and precision/recall;
    logits  (B, 1008): pool3 @ softmax weights WITHOUT bias (torch-fidelity's 'logits_unbiased'), for IS, as the
                       standard evaluator builds its softmax;
    spatial (B, 2023): sFID features = TF tensor `mixed_6/conv:0` (the ReLU output of Mixed_6d.branch1x1 in
                       torch-fidelity's naming, per its weight converter's TF->PyTorch map), first 7 of 192 channels,
                       flattened in TF's NHWC order (17 * 17 * 7) so it matches `mu_s`/`sigma_s` of ADM reference
                       batches. torch-fidelity (0.3.0, 0.4.0) exposes no such layer, so a forward hook captures it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.utils import create_feature_extractor

WEIGHTS_FILE_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256_PREFIX = "6726825d"
WEIGHTS_URL = URL_INCEPTION_V3  # documentation only: never fetched
EXTRACTOR_NAME = "inception-v3-compat"  # torch-fidelity's registry name
SPATIAL_CHANNELS = 7  # the standard evaluator keeps mixed_6/conv[..., :7]


class MissingWeightsError(FileNotFoundError):
    """The Inception weights file is not on disk; the message says which file to put where."""


class WeightsHashError(ValueError):
    """The weights file's sha256 is not the expected one."""


def default_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE_NAME


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_weights(weights_path: str | Path | None = None, expected_sha256: str | None = None) -> tuple[Path, str]:
    """(path, sha256) of a verified weights file. Without `expected_sha256` the official file's prefix is required."""
    path = Path(weights_path) if weights_path is not None else default_weights_path()
    if not path.is_file():
        raise MissingWeightsError(
            f"Inception weights not found at {path}. Put {WEIGHTS_FILE_NAME} (sha256 {WEIGHTS_SHA256_PREFIX}..., "
            f"from {WEIGHTS_URL}) there, or pass its path as weights_path. Nothing is downloaded at run time.")
    digest = sha256_file(path)
    want = expected_sha256 or WEIGHTS_SHA256_PREFIX
    if not digest.startswith(want.lower()):
        raise WeightsHashError(f"{path}: sha256 {digest} does not match the expected {want}")
    return path, digest


def resize_like_tf1(img_B3HW: torch.Tensor, size: int = FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE) -> torch.Tensor:
    """TF1 `resize_bilinear(align_corners=False)` (no half-pixel centres): the resize inside the extractor."""
    return interpolate_bilinear_2d_like_tensorflow1x(img_B3HW, size=(size, size), align_corners=False)


def spatial_nhwc_flatten(mixed6_conv_BCHW: torch.Tensor, channels: int = SPATIAL_CHANNELS) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W*channels) in TF's NHWC order, keeping the first `channels` channels."""
    return mixed6_conv_BCHW[:, :channels].permute(0, 2, 3, 1).reshape(mixed6_conv_BCHW.shape[0], -1)


class InceptionFeatures(nn.Module):
    """uint8 (B, 3, H, W) -> {'pool', 'logits', 'spatial'} from torch-fidelity's extractor plus one forward hook."""

    def __init__(self, weights_path: str | Path | None = None, expected_sha256: str | None = None):
        super().__init__()
        path, self.weights_sha256 = resolve_weights(weights_path, expected_sha256)
        self.net = create_feature_extractor(EXTRACTOR_NAME, ["2048", "logits_unbiased"], cuda=False,
                                            feature_extractor_weights_path=str(path), verbose=False)
        self._spatial = None
        self.net.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output_BCHW):
        self._spatial = spatial_nhwc_flatten(output_BCHW)

    def forward(self, img_B3HW: torch.Tensor) -> dict[str, torch.Tensor]:
        pool_BD, logits_BK = self.net(img_B3HW)  # the extractor itself rejects non-uint8 input
        spatial_BS, self._spatial = self._spatial, None
        return {"pool": pool_BD, "logits": logits_BK, "spatial": spatial_BS}


class _RandomLayout(FeatureExtractorInceptionV3):
    # The extractor loads weights in __init__; this subclass skips that to obtain the bare, randomly initialised layout.
    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


def write_random_inception_weights(path: str | Path, seed: int = 0) -> str:
    """Save a state dict with the exact layout of the official file but random values; return its sha256.

    For tests and benchmarks only (speed does not depend on values). He-normal convolutions with identity BN keep
    activations O(1) through the 94 layers, so features are finite and not degenerate."""
    placeholder = Path(path).with_suffix(".empty")
    torch.save({}, placeholder)
    net = _RandomLayout("random-layout", ["2048"], feature_extractor_weights_path=str(placeholder))
    placeholder.unlink()
    gen = torch.Generator().manual_seed(seed)
    state = net.state_dict()
    for name, t in state.items():
        if name.endswith("conv.weight") or name == "fc.weight":
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        elif name == "fc.bias":
            t.copy_(torch.randn(t.shape, generator=gen))
    from var.io import atomic_torch_save
    atomic_torch_save(path, state)
    return sha256_file(path)
