"""Every config dataclass of the library and the one strict loader (torch-free: importing this package, or
validating a params file, never imports torch).

    loader    build_config, ConfigError, config_to_dict, param / Config (declared valid ranges)
    model     VQVAEConfig, VARConfig, ARConfig, single_scale, VQVAE_PRESETS, VAR_PRESETS
    train     TrainConfig, TokenizerTrainConfig
    data      DataConfig
    sampling  SamplerConfig (with RejectionConfig), SampleConfig, ZeroShotConfig
"""
from .data import SHAPE_FAMILY_NAMES, DataConfig
from .loader import Config, ConfigError, Range, build_config, check_sha256, config_to_dict, field_range, param
from .model import (
           PATCH_NUMS_256,
           PATCH_NUMS_512,
           VAR_PRESETS,
           VQVAE_PRESETS,
           ARConfig,
           VARConfig,
           VQVAEConfig,
           single_scale,
)
from .sampling import CFG_SCHEDULES, RejectionConfig, SampleConfig, SamplerConfig, ZeroShotConfig
from .train import NAN_POLICIES, TokenizerTrainConfig, TrainConfig

__all__ = ["Config", "ConfigError", "check_sha256", "Range", "build_config", "config_to_dict", "field_range", "param",
           "VQVAEConfig", "VARConfig", "ARConfig", "single_scale", "VQVAE_PRESETS", "VAR_PRESETS", "PATCH_NUMS_256",
           "PATCH_NUMS_512", "TrainConfig", "TokenizerTrainConfig", "NAN_POLICIES", "DataConfig",
           "SHAPE_FAMILY_NAMES", "SampleConfig", "SamplerConfig", "RejectionConfig", "CFG_SCHEDULES", "ZeroShotConfig"]
