"""Models: the one config, the model, presets, checkpoints and converters."""

from s3prl_plugins.models.config import SSLModelConfig
from s3prl_plugins.models.factories import (
    PRESETS,
    build_model,
    distilhubert_config,
    hubert_config,
    melhubert_config,
    preset_config,
    star_hubert_config,
)
from s3prl_plugins.models.ssl_model import InputError, SSLModel, SSLOutput, count_parameters, pad_waveforms

__all__ = [
    "PRESETS",
    "InputError",
    "SSLModel",
    "SSLModelConfig",
    "SSLOutput",
    "build_model",
    "count_parameters",
    "distilhubert_config",
    "hubert_config",
    "melhubert_config",
    "pad_waveforms",
    "preset_config",
    "star_hubert_config",
]
