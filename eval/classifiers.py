"""The classifiers of rejection sampling (var/rejection.py): callables uint8 (n, H, W, 3) images and int64 (n,) labels
-> float (n,) probabilities of those labels (softmax of the logits).

- the evaluation network (eval/evalnet.py): the default, trained inside the pipeline on the run's own data;
- a torchvision classifier (a ResNet) from a local state dict, e.g. ImageNet ResNet-50 weights for the ImageNet
  configs: loaded with weights_only, strictly, preprocessed as torchvision's ImageNet evaluation (shorter side
  resized to 256, centre crop 224, ImageNet mean/std). Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from eval.evalnet import load_evalnet, to_model_input
from var.checkpoint import load_state_dict_strict
from var.config import RejectionConfig
from var.io import ArtifactError
from var.weights import load_weights

Classify = Callable[[np.ndarray, np.ndarray], np.ndarray]

IMAGENET_MEAN = (0.485, 0.456, 0.406)    # torchvision's ImageNet normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)


def _label_probs(logits_fn: Callable[[torch.Tensor], torch.Tensor], num_classes: int, device,
                 batch_size: int) -> Classify:
    @torch.no_grad()
    def classify(images_NHW3: np.ndarray, labels_N: np.ndarray) -> np.ndarray:
        labels_N = np.asarray(labels_N, np.int64)
        if len(labels_N) and (labels_N.min() < 0 or labels_N.max() >= num_classes):
            raise ValueError(f"labels outside the classifier's {num_classes} classes: {sorted(set(labels_N))[:5]}")
        out = []
        for s in range(0, len(labels_N), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images_NHW3[s:s + batch_size])).to(device)
            prob_BK = logits_fn(x).float().softmax(-1)
            y = torch.from_numpy(labels_N[s:s + batch_size]).to(device)
            out.append(prob_BK.gather(1, y[:, None])[:, 0].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)
    return classify


def evalnet_classifier(path: str | Path, device, batch_size: int = 500) -> Classify:
    """The evaluation network of `path` (the `evalnet` stage's model.pt) as a rejection classifier."""
    net = load_evalnet(path, map_location=str(device))
    return _label_probs(lambda x: net(to_model_input(x)), net.num_classes, device, batch_size)


def imagenet_preprocess(x_BHW3: torch.Tensor, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, crop, crop): shorter side to `resize` (bilinear, antialiased), centre crop,
    ImageNet mean/std (torchvision's evaluation transform for its ImageNet classifiers)."""
    x = x_BHW3.permute(0, 3, 1, 2).float() / 255
    H, W = x.shape[2:]
    if min(H, W) != resize:
        h, w = (resize, round(W * resize / H)) if H <= W else (round(H * resize / W), resize)
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (x.shape[2] - crop) // 2, (x.shape[3] - crop) // 2
    x = x[:, :, top:top + crop, left:left + crop]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def torchvision_classifier(path: str | Path, arch: str, device, where: str, batch_size: int = 64,
                           expected_sha256: str = "") -> Classify:
    """A torchvision `arch` (resnet50, ...) with the state dict stored at `path` (plain, or under
    'state_dict' / 'model'), its class count read from the head; loaded by var.weights.load_weights (weights_only,
    the optional full pin checked; the digest loaded is `classify.sha256`). `where` names the params section in
    errors."""
    import torchvision
    sd, digest = load_weights(path, expected_sha256, key=f"{where}.classifier_weights",
                              what=f"torchvision {arch} classifier weights",
                              hint="a local state dict; nothing is downloaded")
    if isinstance(sd, dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
        sd = sd.get("state_dict", sd.get("model", sd))
    if not isinstance(sd, dict) or "fc.weight" not in sd:
        raise ArtifactError(f"{where}.classifier_weights: {path} is not a torchvision {arch} state dict "
                            f"(no 'fc.weight')")
    net = getattr(torchvision.models, arch)(weights=None, num_classes=int(sd["fc.weight"].shape[0]))
    load_state_dict_strict(net, sd, f"{where}.classifier_weights: {path} (torchvision {arch})")
    net = net.to(device).eval()
    classify = _label_probs(lambda x: net(imagenet_preprocess(x)), int(sd["fc.weight"].shape[0]), device,
                            batch_size)
    classify.sha256 = digest
    return classify


def rejection_classifier(rc: RejectionConfig, evalnet_path: str | Path | None, device, where: str) -> tuple:
    """(classify, description) of a rejection setting: `rc.classifier_weights` when set, else the evaluation
    network at `evalnet_path` (the job's input)."""
    if rc.classifier_weights:
        classify = torchvision_classifier(rc.classifier_weights, rc.classifier_arch, device, where,
                                          expected_sha256=rc.classifier_weights_sha256)
        return classify, f"{rc.classifier_arch} ({Path(rc.classifier_weights).name}, sha256 {classify.sha256})"
    if not evalnet_path:
        raise ValueError(f"{where}: rejection sampling with the evaluation network needs its model (--classifier)")
    return evalnet_classifier(evalnet_path, device), "evalnet"


__all__ = ["evalnet_classifier", "torchvision_classifier", "imagenet_preprocess", "rejection_classifier"]
