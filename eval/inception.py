"""The standard evaluator's Inception network, through torch-fidelity's `inception-v3-compat`, strictly offline.

Weights. torch-fidelity's port of TF Inception 2015-12-05 (the graph the standard evaluator uses):
    file name : weights-inception-2015-12-05-6726825d.pth
    origin    : https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth
                (`URL_INCEPTION_V3` in torch_fidelity/feature_extractor_inceptionv3.py, torch-fidelity 0.3.0 and 0.4.0)
    sha256    : starts with 6726825d. torch-fidelity ships no full hash; the 8 hex digits in the file name are the
                torch.hub convention (`check_hash`) for a sha256 prefix, and that prefix is required when no digest is
                pinned. The full digest and the exact byte size were not available on the machine this was written on
                (no network): the layout holds 566 tensors, 23,885,392 float32 values (95,542,320 bytes), and a
                torch.save of it is 95,731,847 bytes (~91.3 MiB), so expect about that. Pin the full digest with
                `expected_sha256` (params: `score.inception_weights_sha256`); every score records the digest used.
    loading   : torch-fidelity's `FeatureExtractorInceptionV3.__init__` unpickles its weights file itself, with
                torch.load and weights_only=False, which runs any callable a crafted file names. The file is
                therefore never given to torch-fidelity: `var.weights.load_weights` checks its sha256 and loads it
                with weights_only=True, torch-fidelity's network is built around an in-memory empty state dict we
                serialise ourselves (`_InceptionLayout`), and the checked tensors are loaded into it strictly.
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

import io
from pathlib import Path

import torch
import torch.nn as nn
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from var.checkpoint import CheckpointMismatchError
from var.io import atomic_torch_save
from var.weights import MissingWeightsError, WeightsHashError, load_weights, sha256_file  # noqa: F401 (re-exported)

WEIGHTS_FILE_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256_PREFIX = "6726825d"
WEIGHTS_URL = URL_INCEPTION_V3  # documentation only: never fetched
EXTRACTOR_NAME = "inception-v3-compat"  # torch-fidelity's registry name
PARAMS_KEY = "score.inception_weights"
SPATIAL_CHANNELS = 7  # the standard evaluator keeps mixed_6/conv[..., :7]


def default_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE_NAME


def _missing_hint() -> str:
    return (f"Put {WEIGHTS_FILE_NAME} (sha256 {WEIGHTS_SHA256_PREFIX}..., from {WEIGHTS_URL}) there, or pass its "
            f"path as weights_path. Nothing is downloaded at run time.")


def load_inception_state(weights_path: str | Path | None = None,
                         expected_sha256: str | None = None) -> tuple[dict, Path, str]:
    """(state dict, path, sha256) of a verified weights file, loaded with weights_only=True. Without
    `expected_sha256` the official file's sha256 prefix is required."""
    path = Path(weights_path) if weights_path else default_weights_path()
    state, digest = load_weights(path, expected_sha256 or WEIGHTS_SHA256_PREFIX, key=PARAMS_KEY,
                                 what="Inception weights", hint=_missing_hint())
    return state, path, digest


def _empty_state_dict_bytes() -> io.BytesIO:
    buf = io.BytesIO()
    torch.save({}, buf)
    buf.seek(0)
    return buf


class _InceptionLayout(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception (layout and forward) whose own weights loading never sees a user file.

    torch-fidelity 0.4.0 loads in `__init__` (torch.load of `feature_extractor_weights_path` with weights_only=False,
    then `self.load_state_dict`). Here that path is an in-memory `{}` serialised above, and the load of it is
    skipped; weights come in afterwards through `load_state_dict`, which then behaves as nn.Module's."""

    def __init__(self, name: str, features_list: list[str]):
        super().__init__(name, features_list, feature_extractor_weights_path=_empty_state_dict_bytes())
        self._constructed = True

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if not getattr(self, "_constructed", False):   # torch-fidelity's own call with the empty placeholder
            return None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def inception_network(state_dict, source: str, features_list=("2048", "logits_unbiased")) -> FeatureExtractorInceptionV3:
    """torch-fidelity's extractor holding `state_dict` (loaded strictly, as torch-fidelity itself does)."""
    net = _InceptionLayout(EXTRACTOR_NAME, list(features_list))
    try:
        net.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointMismatchError(f"{source} is not torch-fidelity's Inception layout: {e}") from None
    return net.requires_grad_(False).eval()


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
        state, path, self.weights_sha256 = load_inception_state(weights_path, expected_sha256)
        self.net = inception_network(state, str(path))
        self._spatial = None
        self.net.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output_BCHW):
        self._spatial = spatial_nhwc_flatten(output_BCHW)

    def forward(self, img_B3HW: torch.Tensor) -> dict[str, torch.Tensor]:
        pool_BD, logits_BK = self.net(img_B3HW)  # the extractor itself rejects non-uint8 input
        spatial_BS, self._spatial = self._spatial, None
        return {"pool": pool_BD, "logits": logits_BK, "spatial": spatial_BS}


def write_random_inception_weights(path: str | Path, seed: int = 0) -> str:
    """Save a state dict with the exact layout of the official file but random values; return its sha256.

    For tests and benchmarks only (speed does not depend on values). He-normal convolutions with identity BN keep
    activations O(1) through the 94 layers, so features are finite and not degenerate."""
    gen = torch.Generator().manual_seed(seed)
    state = _InceptionLayout("random-layout", ["2048"]).state_dict()
    for name, t in state.items():
        if name.endswith("conv.weight") or name == "fc.weight":
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        elif name == "fc.bias":
            t.copy_(torch.randn(t.shape, generator=gen))
    atomic_torch_save(path, state)
    return sha256_file(path)
