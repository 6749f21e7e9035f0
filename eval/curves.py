"""Training curves as PNG figures: the DVC plots of the trainers (`dvc plots show` / `dvc plots diff` render images
with no JavaScript, so they work offline, unlike DVC's Vega templates, which load their library from the network)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

# What each trainer's curve figure shows (history keys; absent keys are skipped).
VAR_CURVES = ("train_loss", "val_loss", "val_loss_last", "val_err_last", "val_err_mean_scales")
TOKENIZER_CURVES = ("val_psnr", "val_ssim", "val_rfid_evalnet", "val_rfid_inception", "val_usage_mean")


def save_curves(path: str | Path, history: Sequence[Mapping], x: str, ys: Sequence[str], title: str) -> None:
    """One small panel per metric in `ys` against `x`, over the entries of `history` (one per evaluation),
    written atomically as a PNG. An empty history (imported weights) gives a figure saying so."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from var.io import atomic_path

    ys = [y for y in ys if any(isinstance(h.get(y), (int, float)) for h in history)]
    cols = max(1, min(3, len(ys)))
    rows = max(1, math.ceil(len(ys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    if not ys:
        axes[0, 0].set_visible(True)
        axes[0, 0].text(0.5, 0.5, "no training history", ha="center", va="center")
        axes[0, 0].axis("off")
    for ax, y in zip(axes.flat, ys):
        pts = [(h[x], h[y]) for h in history if isinstance(h.get(y), (int, float)) and x in h]
        ax.set_visible(True)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3)
        ax.set_title(y, fontsize=9)
        ax.set_xlabel(x, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    # Fixed metadata: the same curves give the same bytes (matplotlib otherwise stamps its version and the date).
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
