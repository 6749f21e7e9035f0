"""The offline evaluation network: a small CNN classifier trained on the train split inside the pipeline.

Where no Inception weights exist (no internet), its penultimate features and class probabilities stand in for
Inception's pool3 features / logits in FID, IS and precision/recall. Scores computed with it are always named
`*_evalnet`: they rank models on this dataset and are not comparable to published Inception numbers.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from eval.config import EvalNetConfig  # noqa: F401 (re-exported)
from var.checkpoint import load_state_dict_strict, without_wall_clock
from var.config import config_to_dict
from var.io import ArtifactError, atomic_torch_save, load_torch


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class EvalNet(nn.Module):
    """Conv-BN-ReLU stages at full, 1/2, 1/4 resolution, a 1x1 conv to D channels, global average pooling.

    Adaptive pooling makes it work at any image size >= 16. BatchNorm is used for fast training; in eval mode
    (always, when extracting features) it is a fixed affine map, so features do not depend on the batch.
    """

    def __init__(self, cfg: EvalNetConfig, num_classes: int, image_size: int):
        super().__init__()
        if image_size < 16:
            raise ValueError(f"EvalNet needs images of at least 16 px, got {image_size}")
        w = cfg.width
        self.cfg, self.num_classes, self.image_size = cfg, num_classes, image_size
        # one conv at full resolution, then downsample at once: the full-resolution stage dominates CPU cost
        self.body = nn.Sequential(
            _conv_bn(3, w),
            _conv_bn(w, 2 * w, stride=2), _conv_bn(2 * w, 2 * w),
            _conv_bn(2 * w, 4 * w, stride=2), _conv_bn(4 * w, 4 * w),
            nn.Conv2d(4 * w, cfg.feature_dim, 1, bias=False), nn.BatchNorm2d(cfg.feature_dim), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(cfg.feature_dim, num_classes)

    def features(self, img_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """img_B3HW float in [-1, 1] -> (feat_BD float32 >= 0 (post-ReLU, pooled), logits_BK float32)."""
        feat_BD = F.adaptive_avg_pool2d(self.body(img_B3HW), 1).flatten(1)
        return feat_BD.float(), self.head(feat_BD).float()

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """img_B3HW float in [-1, 1] -> logits_BK."""
        return self.features(img_B3HW)[1]


def to_model_input(images_NHW3: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.ascontiguousarray(images_NHW3) if isinstance(images_NHW3, np.ndarray) else images_NHW3)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _augment(img_B3HW: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random horizontal flips and crops from a reflect-padded image (one offset per image)."""
    B, _, H, W = img_B3HW.shape
    flip = torch.rand(B, generator=gen) < 0.5
    img_B3HW = torch.where(flip[:, None, None, None], img_B3HW.flip(3), img_B3HW)
    padded = F.pad(img_B3HW, (pad,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, B), generator=gen).tolist()
    return torch.stack([padded[b, :, dy[b]:dy[b] + H, dx[b]:dx[b] + W] for b in range(B)])


@torch.no_grad()
def accuracy(model: EvalNet, images_NHW3: np.ndarray, labels_N: np.ndarray, device: str = "cpu",
             batch_size: int = 500) -> float:
    """Top-1 accuracy in [0, 1] of `model` (in eval mode) on uint8 images."""
    was_training = model.training
    model.eval()
    correct = 0
    for lo in range(0, len(labels_N), batch_size):
        x = to_model_input(images_NHW3[lo:lo + batch_size]).to(device)
        pred = model(x).argmax(1).cpu()
        correct += int((pred == torch.as_tensor(labels_N[lo:lo + batch_size])).sum())
    model.train(was_training)
    return correct / max(1, len(labels_N))


def train_evalnet(cfg: EvalNetConfig, train_images: np.ndarray, train_labels: np.ndarray,
                  val_images: np.ndarray, val_labels: np.ndarray, *, device: str = "cpu",
                  progress: Callable[[int, dict], None] | None = None) -> tuple[EvalNet, dict]:
    """Train on uint8 (N, H, W, 3) images / int labels; returns (model in eval mode, metrics).

    metrics: val_accuracy (eval mode), train_accuracy (running accuracy of the last epoch, augmented, which
    saves a full extra pass), epochs, steps, final_loss, seconds. Deterministic for a fixed seed on CPU: the
    init, the shuffling and the augmentation draw from seeded generators, not the global RNG.
    """
    train_labels = np.asarray(train_labels, np.int64)
    num_classes, image_size = int(train_labels.max()) + 1, train_images.shape[1]
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's global RNG
        torch.manual_seed(cfg.seed)
        model = EvalNet(cfg, num_classes, image_size)
    model = model.to(device, memory_format=torch.channels_last)  # ~20% faster convolutions on CPU
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_labels) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, total // 10)
    # one-cycle: a short warmup keeps BatchNorm statistics sane at the high lr; cosine to zero at the end
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: min((it + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, it + 1 - warmup) / max(1, total - warmup))))))
    images_t = torch.from_numpy(np.ascontiguousarray(train_images))
    labels_t = torch.from_numpy(train_labels)
    t0, step, loss = time.perf_counter(), 0, torch.tensor(0.0)
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(labels_t), generator=gen)
        correct = 0
        for lo in range(0, len(order), cfg.batch_size):
            sel = order[lo:lo + cfg.batch_size]
            x = to_model_input(images_t[sel])
            if cfg.augment:
                x = _augment(x, gen)
            x, y = x.to(device, memory_format=torch.channels_last), labels_t[sel].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            correct += int((logits.argmax(1) == y).sum())
        train_acc = correct / len(order)
        if progress is not None:
            progress(epoch + 1, {"train_accuracy": train_acc, "loss": float(loss.detach())})
    model.eval()
    metrics = {
        "val_accuracy": accuracy(model, val_images, np.asarray(val_labels), device),
        "train_accuracy": train_acc if cfg.epochs else float("nan"),
        "epochs": cfg.epochs, "steps": step, "final_loss": float(loss.detach()),
        "seconds": round(time.perf_counter() - t0, 2),
        "num_classes": num_classes, "image_size": image_size,
    }
    return model, metrics


# ------------------------------------------------------------------------------------------- checkpoint
def save_evalnet(path, model: EvalNet, cfg: EvalNetConfig, num_classes: int, image_size: int,
                 metrics: dict) -> None:
    """Self-describing checkpoint (kind 'evalnet'), written atomically."""
    atomic_torch_save(path, {
        "kind": "evalnet", "config": config_to_dict(cfg), "num_classes": int(num_classes),
        "image_size": int(image_size), "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                    for k, v in without_wall_clock(metrics).items()},
    })


def load_evalnet(path, map_location: str = "cpu") -> EvalNet:
    """Rebuild from the stored config and load strictly; returns the model in eval mode on `map_location`.

    A missing file or a non-evalnet checkpoint raises ArtifactError naming the path; a weight mismatch names
    every missing, unexpected and mis-shaped key.
    """
    from var.config import build_config  # local: only loading needs the strict builder
    ckpt = load_torch(path, map_location="cpu")      # small: load on the CPU, then move the module
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "evalnet":
        raise ArtifactError(f"{path}: not an evalnet checkpoint (kind={ckpt.get('kind') if isinstance(ckpt, dict) else type(ckpt).__name__!r})")
    cfg = build_config(EvalNetConfig, ckpt["config"], "evalnet")
    model = EvalNet(cfg, int(ckpt["num_classes"]), int(ckpt["image_size"]))
    load_state_dict_strict(model, ckpt["model"], f"{path}: evalnet weights (the stored config)")
    return model.to(map_location).eval()         # the module too, not only the loaded tensors
