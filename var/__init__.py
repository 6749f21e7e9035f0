"""VAR: visual autoregressive modeling by next-scale prediction (Tian et al., NeurIPS 2024).

Public API:
    VQVAEConfig, VARConfig, VQVAE_PRESETS, VAR_PRESETS   -- configs and named presets (var.config)
    VQVAE                                                -- multi-scale residual VQ tokenizer (var.vqvae)
    VAR                                                  -- the next-scale transformer (var.transformer)
    sample                                               -- top-k/top-p/CFG sampler (var.sampling)
    save_checkpoint, load_model_checkpoint, load_official_state_dict  (var.checkpoint)
"""
from .config import VAR_PRESETS, VQVAE_PRESETS, ConfigError, VARConfig, VQVAEConfig, build_config
from .checkpoint import load_model_checkpoint, load_official_state_dict, save_checkpoint
from .sampling import sample
from .transformer import VAR
from .vqvae import VQVAE

__all__ = ["VQVAEConfig", "VARConfig", "VQVAE_PRESETS", "VAR_PRESETS", "ConfigError", "build_config", "VQVAE",
           "VAR", "sample", "save_checkpoint", "load_model_checkpoint", "load_official_state_dict"]
