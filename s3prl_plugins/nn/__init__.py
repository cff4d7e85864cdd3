"""Building blocks (torchaudio-style): front-ends, transformer components, subsampling. No training logic here."""

from s3prl_plugins.nn.frontends import ConvFeatureExtractor, LogMelFrontend, conv_output_lengths
from s3prl_plugins.nn.subsampling import cif
from s3prl_plugins.nn.transformer import (
    ConvPositionalEmbedding,
    Encoder,
    EncoderLayer,
    FeedForward,
    RelativePositionBias,
    SelfAttention,
)

__all__ = [
    "ConvFeatureExtractor",
    "LogMelFrontend",
    "conv_output_lengths",
    "ConvPositionalEmbedding",
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "RelativePositionBias",
    "SelfAttention",
    "cif",
]
