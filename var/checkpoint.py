"""Self-describing checkpoints and import of the released reference checkpoints.

Our checkpoints are dicts `{'kind', 'config', 'model', 'step', ...}` with the model config as a plain dict;
loading rebuilds the model from that config and loads strictly. Released checkpoints (`vae_ch160v4096z32.pth`,
`var_d16.pth` ...) are bare state dicts whose key names our modules share; their architecture comes from a
preset or the reference constructor's keyword arguments (`configs_from_reference`). Released files are third-party
weights: they are read through var/weights.py (sha256 pin, no code execution), and the digest loaded is returned
by `import_released` for the stage to record.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from .config import VARConfig, VQVAEConfig, build_config, config_to_dict
from .io import ArtifactError, atomic_torch_save, load_torch
from .transformer import VAR
from .vqvae import VQVAE
from .weights import load_weights

MODEL_KINDS: dict[str, tuple[type, type]] = {"vqvae": (VQVAE, VQVAEConfig), "var": (VAR, VARConfig)}
# The raster-scan AR baseline of Table 3: a GPT-2-style transformer over single-scale tokens.
from .ar import AR, ARConfig  # noqa: E402

MODEL_KINDS["ar"] = (AR, ARConfig)


class CheckpointMismatchError(ArtifactError):
    """A state dict does not fit the model: the message lists missing, unexpected and mis-shaped keys."""


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Raise CheckpointMismatchError naming every missing, unexpected and mis-shaped key (strict loading)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        lines = [f"{source} does not match {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else ""))
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}"
                         + (" ..." if len(unexpected) > 20 else ""))
        if shapes:
            lines.append(f"  mis-shaped keys ({len(shapes)}): " + "; ".join(shapes[:20]))
        raise CheckpointMismatchError("\n".join(lines))


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "state dict"):
    check_state_dict(model, state, source)
    # Values are cast to the parameters' dtype (the fixtures store float16 values exactly representable).
    model.load_state_dict(dict(state), strict=True)
    return model


# ------------------------------------------------------------------------------------------------ ours
# Wall-clock measurements differ between identical runs; a checkpoint's bytes (and so the weights digest scores.json
# records) must depend only on what was trained. Timings stay in the stages' metrics JSON files.
WALL_CLOCK_KEY = re.compile(r"(^|_)(time|seconds)(_|$)|_per_s$|_s$")


def without_wall_clock(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """`metrics` without its wall-clock entries (keys such as train_time_s, seconds, train_img_per_s)."""
    return {k: v for k, v in metrics.items() if not WALL_CLOCK_KEY.search(k)}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, kind: str, step: int = 0,
                    extra: Mapping[str, Any] | None = None) -> None:
    """Atomically write `{'kind', 'config', 'model', 'step', **extra}`; `model.cfg` is stored as a plain dict and
    `extra['metrics']` without its wall-clock entries."""
    ckpt = {"kind": kind, "config": config_to_dict(model.cfg), "model": model.state_dict(), "step": int(step)}
    ckpt.update(extra or {})
    if "metrics" in ckpt:
        ckpt["metrics"] = without_wall_clock(ckpt["metrics"])
    atomic_torch_save(path, ckpt)


def build_model(kind: str, config: Mapping[str, Any]) -> nn.Module:
    if kind not in MODEL_KINDS:
        raise CheckpointMismatchError(f"unknown model kind {kind!r}; known: {sorted(MODEL_KINDS)}")
    model_cls, cfg_cls = MODEL_KINDS[kind]
    return model_cls(build_config(cfg_cls, config, f"checkpoint config ({kind})"))


def load_model_checkpoint(path: str | os.PathLike, kind: str | None = None, map_location="cpu"):
    """Rebuild a model from one of our checkpoints (weights_only load). Returns (model in eval mode, ckpt dict)."""
    ckpt = load_torch(path, map_location=map_location)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt or "kind" not in ckpt:
        raise ArtifactError(f"{path}: not a self-describing checkpoint (needs 'kind', 'config', 'model'); "
                            f"for a released reference checkpoint use load_official_state_dict")
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointMismatchError(f"{path}: holds a {ckpt['kind']!r} model, expected {kind!r}")
    model = build_model(ckpt["kind"], ckpt["config"])
    load_state_dict_strict(model, ckpt["model"], source=str(path))
    return model.eval(), ckpt


# ------------------------------------------------------------------------------------------------ released
def load_matching_checkpoint(path: str | os.PathLike, kind: str, expected_cfg, section: str, map_location="cpu"):
    """Load one of our checkpoints and check that its stored config is the one params give for it (`section`).

    A tokenizer or VAR checkpoint written under other params (a hand-copied file, a stale run) would otherwise
    load fine and fail later with an obscure shape error, or silently produce tokens of another vocabulary."""
    model, ckpt = load_model_checkpoint(path, kind=kind, map_location=map_location)
    got, want = config_to_dict(model.cfg), config_to_dict(expected_cfg)
    diff = [f"{k}: checkpoint {got.get(k)!r} vs params {want.get(k)!r}" for k in sorted(set(got) | set(want))
            if got.get(k) != want.get(k)]
    if diff:
        raise CheckpointMismatchError(f"{path} does not match params '{section}' ({'; '.join(diff)}); rerun the "
                                      f"stage that writes it, or fix '{section}'")
    return model, ckpt


def configs_from_reference(vqvae_kwargs: Mapping[str, Any] | None = None,
                           var_kwargs: Mapping[str, Any] | None = None):
    """Translate the reference constructors' keyword arguments (as in the fixtures' `config`) to our configs.

    The reference VQVAE fixes ch_mult (1,1,2,2,4), 2 residual blocks and attention on; its quantiser's
    `quant_resi` is the phi ratio and `share_quant_resi` the number of shared phi convs.
    """
    vq_cfg = var_cfg = None
    if vqvae_kwargs is not None:
        k = dict(vqvae_kwargs)
        if k.get("using_znorm"):
            raise NotImplementedError("using_znorm=True (cosine codebook) is not implemented; released models use False")
        vq_cfg = VQVAEConfig(vocab_size=k.get("vocab_size", 4096), z_channels=k.get("z_channels", 32),
                             ch=k.get("ch", 128), dropout=k.get("dropout", 0.0), beta=k.get("beta", 0.25),
                             quant_conv_ks=k.get("quant_conv_ks", 3), quant_resi=k.get("quant_resi", 0.5),
                             share_quant_resi=k.get("share_quant_resi", 4),
                             patch_nums=tuple(k.get("v_patch_nums", (1, 2, 3, 4, 5, 6, 8, 10, 13, 16))))
    if var_kwargs is not None:
        k = dict(var_kwargs)
        depth = k["depth"]
        var_cfg = VARConfig(
            depth=depth, num_classes=k.get("num_classes", 1000),
            vocab_size=vq_cfg.vocab_size if vq_cfg else 4096, z_channels=vq_cfg.z_channels if vq_cfg else 32,
            patch_nums=tuple(k.get("patch_nums", (1, 2, 3, 4, 5, 6, 8, 10, 13, 16))),
            embed_dim_override=k.get("embed_dim", 0) if k.get("embed_dim", 64 * depth) != 64 * depth else 0,
            num_heads_override=k.get("num_heads", 0) if k.get("num_heads", depth) != depth else 0,
            mlp_ratio=k.get("mlp_ratio", 4.0), drop_rate=k.get("drop_rate", 0.0),
            attn_drop_rate=k.get("attn_drop_rate", 0.0),
            drop_path_rate_override=k.get("drop_path_rate", -1.0) if "drop_path_rate" in k else -1.0,
            norm_eps=k.get("norm_eps", 1e-6), shared_aln=k.get("shared_aln", False),
            attn_l2_norm=k.get("attn_l2_norm", True), plain_attn_scale=0.25, cond_drop_rate=k.get("cond_drop_rate", 0.1))
    return vq_cfg, var_cfg


def load_released_state_dict(path, expected_sha256: str | None = "", *, key: str = "pretrained",
                              map_location="cpu") -> tuple[Mapping[str, torch.Tensor], str]:
    """(state dict, sha256) of a released checkpoint file (a bare state dict, or {'model': ...}), checked against
    `expected_sha256` and loaded without running code (var/weights.py)."""
    obj, digest = load_weights(path, expected_sha256, key=key, what="released checkpoint", map_location=map_location)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ArtifactError(f"{path} ({key}): not a state dict (holds {type(obj).__name__})")
    return obj, digest


def load_official_state_dict(model: nn.Module, path_or_state, map_location="cpu", *,
                             expected_sha256: str | None = "", key: str = "pretrained") -> nn.Module:
    """Load a released reference checkpoint (a bare state dict, or {'model': ...}) strictly into `model`."""
    if isinstance(path_or_state, Mapping):
        return load_state_dict_strict(model, path_or_state, "state dict")
    state, _ = load_released_state_dict(path_or_state, expected_sha256, key=key, map_location=map_location)
    return load_state_dict_strict(model, state, str(path_or_state))


def import_released(model: nn.Module, path, expected_sha256: str | None = "", *, key: str,
                    map_location="cpu") -> str:
    """Load a released checkpoint file strictly into `model`; return the sha256 of the file loaded (to record)."""
    state, digest = load_released_state_dict(path, expected_sha256, key=key, map_location=map_location)
    load_state_dict_strict(model, state, str(path))
    return digest
