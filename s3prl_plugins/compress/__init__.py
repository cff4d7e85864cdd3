"""Compression of any model of the zoo (Lin et al. 2024, "Compressing Transformer-Based Self-Supervised
Models for Speech Processing"): weight, head and FFN pruning, knowledge distillation, first-k layers,
diagonal-head replacement, and the waveform CNN's channels (:func:`prune_conv_channels`), chained as one
pipeline (:mod:`s3prl_plugins.compress.pipeline`)."""

from s3prl_plugins.compress.diagonal import diagonality, head_diagonality, mean_diagonality
from s3prl_plugins.compress.scores import (
    ffn_l1_scores,
    head_gradient_scores,
    head_l1_scores,
    normalize_within_layers,
    select_global,
    select_per_layer,
)
from s3prl_plugins.compress.structured import (
    PruningError,
    conv_channel_masks,
    count_heads,
    prune_conv_channels,
    prune_ffn,
    prune_heads,
    replace_heads,
    truncate_layers,
)
from s3prl_plugins.compress.weight import PAPER_SCHEDULE, LossPlateau, WeightMasks, density_schedule, model_density

__all__ = [
    "PAPER_SCHEDULE",
    "LossPlateau",
    "PruningError",
    "WeightMasks",
    "conv_channel_masks",
    "count_heads",
    "density_schedule",
    "diagonality",
    "ffn_l1_scores",
    "head_diagonality",
    "head_gradient_scores",
    "head_l1_scores",
    "mean_diagonality",
    "model_density",
    "normalize_within_layers",
    "prune_conv_channels",
    "prune_ffn",
    "prune_heads",
    "replace_heads",
    "select_global",
    "select_per_layer",
    "truncate_layers",
]
