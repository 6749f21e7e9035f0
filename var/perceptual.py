"""Perceptual losses for tokenizer training (the lambda_P term of paper eq. 5): LPIPS-VGG16 and an offline stand-in.

`LPIPS` is Zhang et al. 2018 ("v0.1", the `lpips` package's `LPIPS(net='vgg')`): torchvision's VGG16 features cut
after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; each map unit-normalised over channels; squared differences
weighted per channel by the learned 1x1 "lin" heads, averaged over positions, summed over the five layers.
Nothing is downloaded: the weights come from two local files (`LPIPS_FILES`), third-party weights read through
var/weights.py (optional sha256 pins, `tokenizer.train.perceptual_weights_sha256`; no code execution); the digests
loaded are kept in `LPIPS.weights_sha256` for the stage to record.

`FeatureDistance` is the offline default (`perceptual: evalnet`): the same recipe on the pipeline's own evaluation
network (eval/evalnet.py), with uniform channel weights (no learned heads exist for it). It is a feature-matching
loss on a small classifier trained on this dataset -- not LPIPS, and named `evalnet` wherever it is reported.

Images in [-1, 1], (B, 3, H, W); losses are per image, (B,).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

# file name -> (what it is, sha256 if known). torchvision names its files <name>-<first 8 hex of sha256>.pth.
LPIPS_FILES = {
    "vgg16-397923af.pth": ("torchvision's ImageNet VGG16 (https://download.pytorch.org/models/vgg16-397923af.pth); "
                           "only its `features.*` tensors are used", "397923af… (sha256 prefix from the name)"),
    "vgg.pth": ("the LPIPS v0.1 linear heads (`lpips/weights/v0.1/vgg.pth` of github.com/richzhang/"
                "PerceptualSimilarity, also inside the `lpips` pip package)", "unknown (not recorded here)"),
}
PARAMS_KEY = "tokenizer.train.perceptual_weights"
VGG_CUTS = (4, 9, 16, 23, 30)               # features[:4] -> relu1_2, ..., features[23:30] -> relu5_3
VGG_CHANNELS = (64, 128, 256, 512, 512)


def _unit_normalise(f_BCHW: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f_BCHW / (f_BCHW.square().sum(1, keepdim=True).sqrt() + eps)


def missing_weights_message(paths: Sequence[str | Path]) -> str:
    lines = [f"perceptual 'lpips-vgg16' needs two local weight files in tokenizer.train.perceptual_weights "
             f"(got {[str(p) for p in paths]}); nothing is downloaded. Expected, in this order:"]
    lines += [f"  {i + 1}. {name}: {what}; sha256 {digest}" for i, (name, (what, digest)) in
              enumerate(LPIPS_FILES.items())]
    lines.append("Put them e.g. under weights/ and set perceptual_weights: [weights/vgg16-397923af.pth, "
                 "weights/vgg.pth], or use `perceptual: evalnet` / lambda_p: 0 offline.")
    return "\n".join(lines)


class LPIPS(nn.Module):
    """LPIPS v0.1 with a VGG16 backbone; frozen (no parameter requires grad), always in eval mode."""

    def __init__(self):
        super().__init__()
        from torchvision.models import vgg16
        with torch.device("meta"):        # the layout only: the 120M classifier weights are never allocated
            feats = vgg16(weights=None).features
        feats = feats.to_empty(device="cpu")
        for p in feats.parameters():      # zeros until load_files: the values always come from the files
            nn.init.zeros_(p)
        self.slices = nn.ModuleList(feats[a:b] for a, b in zip((0,) + VGG_CUTS[:-1], VGG_CUTS))
        # LPIPS's ScalingLayer: [-1, 1] input -> ImageNet-normalised input
        self.register_buffer("shift", torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([.458, .448, .450]).view(1, 3, 1, 1))
        self.lins = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in VGG_CHANNELS)
        self.weights_sha256: tuple[str, str] | None = None   # set by load_files
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        return super().train(False)       # dropout of the lin heads is a training-time detail of LPIPS itself

    def load_files(self, vgg_path: str | Path, lin_path: str | Path, sha256: Sequence[str] = ()) -> "LPIPS":
        """Load torchvision's vgg16 state dict (features.* used, classifier.* ignored) and LPIPS' lin heads,
        each checked against its entry of `sha256` ('' or absent: not pinned)."""
        from var.checkpoint import load_state_dict_strict
        from var.weights import load_weights
        pins = tuple(sha256) + ("",) * (2 - len(sha256))
        vgg, vgg_sha = load_weights(vgg_path, pins[0], key=f"{PARAMS_KEY}[0]", what="VGG16 weights")
        lin, lin_sha = load_weights(lin_path, pins[1], key=f"{PARAMS_KEY}[1]", what="LPIPS heads")
        if not isinstance(vgg, dict) or not isinstance(lin, dict):
            raise RuntimeError(f"{vgg_path if not isinstance(vgg, dict) else lin_path}: not a state dict")
        feats = {}
        for k, v in vgg.items():
            if k.startswith("features."):
                idx, rest = k[len("features."):].split(".", 1)
                si = sum(int(idx) >= c for c in VGG_CUTS[:-1])   # slicing a Sequential keeps its indices
                feats[f"{si}.{idx}.{rest}"] = v
        load_state_dict_strict(self.slices, feats, f"{vgg_path} (features.*)")
        load_state_dict_strict(self.lins, {str(i): lin.get(f"lin{i}.model.1.weight") for i in range(5)
                                           if f"lin{i}.model.1.weight" in lin}, f"{lin_path} (lin*.model.1.weight)")
        self.weights_sha256 = (vgg_sha, lin_sha)
        return self

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        h_x, h_y = (x_B3HW - self.shift) / self.scale, (y_B3HW - self.shift) / self.scale
        d_B = x_B3HW.new_zeros(x_B3HW.shape[0])
        for sl, w_1C11 in zip(self.slices, self.lins):
            h_x, h_y = sl(h_x), sl(h_y)
            diff = (_unit_normalise(h_x) - _unit_normalise(h_y)).square()
            d_B = d_B + (diff * w_1C11).sum(1).mean((1, 2))
        return d_B


class FeatureDistance(nn.Module):
    """LPIPS recipe on the evaluation network: unit-normalised activations after each Conv-BN-ReLU stage of
    `evalnet.body`, squared differences averaged over channels and positions, summed over stages. Frozen."""

    def __init__(self, evalnet: nn.Module):
        super().__init__()
        self.body = evalnet.body
        self.taps = [i for i, m in enumerate(self.body) if isinstance(m, (nn.Sequential, nn.ReLU))]
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        return super().train(False)       # BatchNorm stays a fixed affine map

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        h_x, h_y = x_B3HW, y_B3HW
        d_B = x_B3HW.new_zeros(x_B3HW.shape[0])
        for i, m in enumerate(self.body):
            h_x, h_y = m(h_x), m(h_y)
            if i in self.taps:
                d_B = d_B + (_unit_normalise(h_x) - _unit_normalise(h_y)).square().mean((1, 2, 3))
        return d_B


def build_perceptual(kind: str, weights: Sequence[str | Path] = (), evalnet: nn.Module | None = None,
                     weights_sha256: Sequence[str] = ()) -> nn.Module:
    """'lpips-vgg16' (files in `weights`, see LPIPS_FILES, optionally pinned by `weights_sha256`) or 'evalnet'
    (the loaded evaluation network)."""
    if kind == "lpips-vgg16":
        from var.weights import MissingWeightsError
        paths = [Path(p) for p in weights]
        if len(paths) != 2 or not all(p.is_file() for p in paths):
            raise MissingWeightsError(missing_weights_message(paths))
        return LPIPS().load_files(*paths, sha256=weights_sha256)
    if kind == "evalnet":
        if evalnet is None:
            raise FileNotFoundError("perceptual 'evalnet' needs the evaluation network checkpoint "
                                    "(the tokenizer stage's --evalnet input, runs/<run>/evalnet/model.pt)")
        return FeatureDistance(evalnet)
    raise ValueError(f"unknown perceptual backbone {kind!r}; choose 'evalnet' or 'lpips-vgg16'")
