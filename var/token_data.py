"""Token files and what is computed from them for training VAR and the AR baseline: the checked `TokenData`, the
teacher-forcing input of each model kind (paper Sec. 3.3: VAR sees the tokenizer's cumulative f_hat resized to the
next scale), and validation (mean and last-scale cross entropy, token error rate per scale).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from var.distributed import all_reduce_sum, current_world
from var.io import load_npz
from var.token_loss import token_ce_BL


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class TokenData:
    idx_NL: np.ndarray          # int16/int32, all scales concatenated
    labels_N: np.ndarray        # int64
    patch_nums: tuple[int, ...]

    @property
    def num(self) -> int:
        return int(self.labels_N.shape[0])


def as_token_data(tokens: Any, patch_nums: tuple[int, ...] | None, what: str) -> TokenData:
    """A token file path or a mapping with idx_NL / labels_N / patch_nums -> checked TokenData."""
    if isinstance(tokens, TokenData):
        d = {"idx_NL": tokens.idx_NL, "labels_N": tokens.labels_N, "patch_nums": np.asarray(tokens.patch_nums)}
    elif isinstance(tokens, Mapping):
        d = tokens
    else:
        d = load_npz(tokens, required=("idx_NL", "labels_N", "patch_nums"))
    pns = tuple(int(p) for p in np.asarray(d["patch_nums"]).reshape(-1))
    if patch_nums is not None and pns != tuple(patch_nums):
        raise ValueError(f"{what} tokens have patch_nums {pns}, the model expects {tuple(patch_nums)}")
    idx_NL, labels_N = np.asarray(d["idx_NL"]), np.asarray(d["labels_N"]).astype(np.int64)
    L = sum(p * p for p in pns)
    if idx_NL.ndim != 2 or idx_NL.shape[1] != L or idx_NL.shape[0] != labels_N.shape[0]:
        raise ValueError(f"{what} tokens: idx_NL {idx_NL.shape} / labels_N {labels_N.shape} do not match L={L}")
    return TokenData(idx_NL, labels_N, pns)


def split_scales(idx_BL: torch.Tensor, patch_nums: tuple[int, ...]) -> list[torch.Tensor]:
    return list(torch.split(idx_BL, [p * p for p in patch_nums], dim=1))


def var_inputs(vqvae, idx_BL: torch.Tensor, patch_nums: tuple[int, ...]) -> torch.Tensor:
    """Teacher-forcing input for next-scale prediction, (B, L - pn_1^2, Cvae); the tokenizer is frozen."""
    with torch.no_grad():
        return vqvae.idx_to_var_input(split_scales(idx_BL, patch_nums))


def model_inputs(model, vqvae, idx_BL: torch.Tensor, patch_nums: tuple[int, ...]) -> torch.Tensor:
    """Teacher-forcing input of either model kind: a model with `teacher_forcing_input` (the AR baseline,
    var/ar.py: its own tokens shifted right) builds it from the tokens; VAR gets `var_inputs`."""
    if hasattr(model, "teacher_forcing_input"):
        return model.teacher_forcing_input(idx_BL)
    return var_inputs(vqvae, idx_BL, patch_nums)


# ------------------------------------------------------------------------------------------------ eval
@torch.no_grad()
def evaluate(model, vqvae, data: TokenData, batch_size: int, device: torch.device) -> dict:
    """Mean CE over all tokens, CE of the last scale, token error rate (1 - argmax accuracy) per scale."""
    was_training = model.training
    model.eval()
    pns = data.patch_nums
    K = len(pns)
    bounds = np.cumsum([0] + [p * p for p in pns])
    loss_sum, loss_last_sum, n = 0.0, 0.0, 0
    err_sum_K = np.zeros(K)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for s in range(0, data.num, batch_size):
            idx_BL = torch.from_numpy(data.idx_NL[s:s + batch_size].astype(np.int64)).to(device)
            label_B = torch.from_numpy(data.labels_N[s:s + batch_size]).to(device)
            logits_BLV = model(label_B, model_inputs(model, vqvae, idx_BL, pns))
            loss_BL = token_ce_BL(logits_BLV, idx_BL)
            wrong_BL = (logits_BLV.argmax(dim=-1) != idx_BL).double()
            B = idx_BL.shape[0]
            loss_sum += loss_BL.double().mean(dim=1).sum().item()
            loss_last_sum += loss_BL[:, bounds[-2]:].double().mean(dim=1).sum().item()
            for k in range(K):
                err_sum_K[k] += wrong_BL[:, bounds[k]:bounds[k + 1]].mean(dim=1).sum().item()
            n += B
    model.train(was_training)
    err_K = err_sum_K / max(n, 1)
    return {"val_loss": loss_sum / max(n, 1), "val_loss_last": loss_last_sum / max(n, 1),
            "val_err_last": float(err_K[-1]), "val_err_mean_scales": float(err_K.mean()),
            "val_err_per_scale": [float(e) for e in err_K]}


def evaluate_sharded(model, vqvae, data: TokenData, batch_size: int, device: torch.device, world=None) -> dict:
    """`evaluate` with the rows split over the ranks and the sums all-reduced (plain `evaluate` on one process)."""
    world = world or current_world()
    if not world.distributed:
        return evaluate(model, vqvae, data, batch_size, device)
    lo, hi = (data.num * world.rank) // world.size, (data.num * (world.rank + 1)) // world.size
    part = TokenData(data.idx_NL[lo:hi], data.labels_N[lo:hi], data.patch_nums)
    m = evaluate(model, vqvae, part, batch_size, device)
    n = hi - lo
    keys = ("val_loss", "val_loss_last", "val_err_last", "val_err_mean_scales")
    tot = all_reduce_sum([m[k] * n for k in keys] + [e * n for e in m["val_err_per_scale"]] + [n], device)
    N = max(tot[-1], 1)
    out = {k: float(tot[i] / N) for i, k in enumerate(keys)}
    out["val_err_per_scale"] = [float(x / N) for x in tot[len(keys):-1]]
    return out
