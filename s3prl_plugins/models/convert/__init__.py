"""Converters from reference checkpoints (s3prl, fairseq, Hugging Face ``transformers``, torchaudio) to
our :class:`~s3prl_plugins.models.SSLModel` (and the published STaRHuBERT Lightning format,
:mod:`.star_lightning`). Each returns ``(config, state_dict)``; keys are mapped explicitly (see
:mod:`.keymap`) and unknown keys raise :class:`ConversionError`."""

from s3prl_plugins.models.convert.detect import detect_format
from s3prl_plugins.models.convert.from_fairseq import from_fairseq
from s3prl_plugins.models.convert.from_hf import from_transformers
from s3prl_plugins.models.convert.from_s3prl import (
    from_s3prl_distiller,
    from_s3prl_hubert,
    from_s3prl_wav2vec2,
    from_s3prl_wavlm,
)
from s3prl_plugins.models.convert.from_torchaudio import from_torchaudio
from s3prl_plugins.models.convert.keymap import ConversionError, apply_key_map, parse_conv_layers
from s3prl_plugins.models.convert.star_lightning import (
    from_star_lightning,
    read_distiller_yaml,
    star_lightning_config,
)

# The reader of each detected reference format: ``READERS[fmt](checkpoint dict, keep_head)`` -> (config, state).
# (Ours and the published STaRHuBERT pair need the file's path and are read by models.loading.)
READERS = {
    "s3prl_hubert": lambda obj, keep_head: from_s3prl_hubert(obj, keep_head=keep_head),
    "s3prl_wav2vec2": lambda obj, keep_head: from_s3prl_wav2vec2(obj),
    "s3prl_wavlm": lambda obj, keep_head: from_s3prl_wavlm(obj),
    "s3prl_distiller": lambda obj, keep_head: from_s3prl_distiller(obj, keep_head=keep_head),
    "fairseq": lambda obj, keep_head: from_fairseq(obj),
}

__all__ = [
    "READERS",
    "ConversionError",
    "apply_key_map",
    "detect_format",
    "from_fairseq",
    "from_s3prl_distiller",
    "from_s3prl_hubert",
    "from_s3prl_wav2vec2",
    "from_s3prl_wavlm",
    "from_torchaudio",
    "from_transformers",
    "parse_conv_layers",
    "from_star_lightning",
    "read_distiller_yaml",
    "star_lightning_config",
]
