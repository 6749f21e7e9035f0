"""VAR: visual autoregressive modeling by next-scale prediction (Tian et al., NeurIPS 2024).

Public API (imported on first use, so `import var.config` -- params validation -- never imports torch):
    VQVAEConfig, VARConfig, VQVAE_PRESETS, VAR_PRESETS   -- configs and named presets (var.config)
    VQVAE                                                -- multi-scale residual VQ tokenizer (var.vqvae)
    VAR                                                  -- the next-scale transformer (var.transformer)
    sample                                               -- top-k/top-p/CFG sampler (var.sampling)
    save_checkpoint, load_model_checkpoint, load_official_state_dict  (var.checkpoint)
"""
import importlib

_PUBLIC = {"VQVAEConfig": "config", "VARConfig": "config", "VQVAE_PRESETS": "config", "VAR_PRESETS": "config",
           "ConfigError": "config", "build_config": "config", "VQVAE": "vqvae", "VAR": "transformer",
           "sample": "sampling", "save_checkpoint": "checkpoint", "load_model_checkpoint": "checkpoint",
           "load_official_state_dict": "checkpoint"}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_PUBLIC)
