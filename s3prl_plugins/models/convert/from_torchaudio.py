"""torchaudio's ``Wav2Vec2Model`` (HuBERT, wav2vec 2.0, WavLM bundles)."""

from __future__ import annotations

import torch

from s3prl_plugins.models.config import SSLModelConfig
from s3prl_plugins.models.convert.common import Converted
from s3prl_plugins.models.convert.keymap import (
    TORCHAUDIO_DROPPED,
    TORCHAUDIO_RULES,
    apply_key_map,
)


def from_torchaudio(model: torch.nn.Module, normalize_waveform: bool = False) -> Converted:
    """A torchaudio ``Wav2Vec2Model`` (``wav2vec2_model``/``hubert_base`` factories), read from its modules."""
    fe = model.feature_extractor
    enc = model.encoder
    conv = []
    norm = "none"
    for i, block in enumerate(fe.conv_layers):
        c = block.conv
        conv.append((c.out_channels, c.kernel_size[0], c.stride[0]))
        if block.layer_norm is not None:
            norm = "group_norm" if isinstance(block.layer_norm, torch.nn.GroupNorm) else "layer_norm"
    tr = enc.transformer
    layers = len(tr.layers)
    att = tr.layers[0].attention
    dim = att.embed_dim
    pos = tr.pos_conv_embed.conv
    config = SSLModelConfig(
        frontend="conv",
        conv_layers=conv,
        conv_norm=norm,
        conv_bias=fe.conv_layers[0].conv.bias is not None,
        normalize_waveform=normalize_waveform,
        embed_dim=dim,
        num_layers=layers,
        num_heads=[layer.attention.num_heads for layer in tr.layers],
        head_dim=att.head_dim,
        ffn_dims=[layer.feed_forward.intermediate_dense.out_features for layer in tr.layers],
        pos_conv_kernel=pos.kernel_size[0],
        pos_conv_groups=pos.groups,
        layer_norm_first=bool(tr.layers[0].layer_norm_first),  # torchaudio inverts the flag on `Transformer`
        name="torchaudio",
    )
    return config, apply_key_map(model.state_dict(), TORCHAUDIO_RULES, TORCHAUDIO_DROPPED, source="torchaudio model")
