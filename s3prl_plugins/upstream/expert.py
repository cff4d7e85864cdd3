"""The s3prl expert contract for every model of ours.

``UpstreamExpert(ckpt, model_config=None, **kwargs)``; ``forward(list of 1-D 16 kHz waveforms)``
returns ``{"hidden_states": [...], "last_hidden_state": ...}`` with ``num_layers + 1`` tensors
(batch, frames, dim); ``get_downsample_rates(key)`` gives the model's stride in samples.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

import torch
import yaml
from torch import Tensor, nn

from s3prl_plugins.models.checkpoint import load_checkpoint
from s3prl_plugins.models.ssl_model import InputError, SSLModel, pad_waveforms

logger = logging.getLogger(__name__)

EXPERT_OPTIONS = {"num_layers"}


def check_waveforms(wavs: Sequence[Tensor], min_samples: int) -> List[Tensor]:
    """Validate a list of waveforms for a model; raises :class:`InputError` with the fix."""
    if len(wavs) == 0:
        raise InputError("no waveforms given")
    out = []
    for i, w in enumerate(wavs):
        if not isinstance(w, Tensor):
            raise InputError(f"waveform {i} is a {type(w).__name__}, not a torch.Tensor")
        if w.dim() == 2 and 1 in w.shape:
            w = w.reshape(-1)
        if w.dim() != 1:
            raise InputError(
                f"waveform {i} has shape {tuple(w.shape)}: expected mono (samples,). Mix multi-channel audio "
                "down first (s3prl_plugins.data.audio.load_audio(path, mono='mix') does)"
            )
        if w.numel() == 0:
            raise InputError(f"waveform {i} is empty")
        if w.numel() < min_samples:
            raise InputError(
                f"waveform {i} has {w.numel()} samples, fewer than the {min_samples} "
                f"({min_samples / 16:.1f} ms at 16 kHz) the model needs for one frame"
            )
        if not torch.isfinite(w).all():
            raise InputError(f"waveform {i} contains NaN or Inf samples")
        out.append(w)
    return out


class UpstreamExpert(nn.Module):
    """s3prl expert around an :class:`SSLModel`.

    Args:
        ckpt: path of one of our checkpoints (or an already built model via ``model=``).
        model_config: optional YAML of expert options: ``num_layers`` (keep only the first layers).
        family: the architecture family the entry accepts (``conv`` models or ``melhubert``).
    """

    def __init__(
        self,
        ckpt: Optional[str] = None,
        model_config: Optional[str] = None,
        family: Optional[str] = None,
        model: Optional[SSLModel] = None,
        **kwargs: Any,
    ):
        super().__init__()
        if model is None:
            if not ckpt:
                raise ValueError("pass ckpt=PATH of an s3prl-plugins checkpoint")
            model, _ = load_checkpoint(str(ckpt), expect=family)
        self.model = model.eval()
        self.num_layers: Optional[int] = None
        if model_config:
            with open(model_config) as f:
                opts: Dict[str, Any] = yaml.safe_load(f) or {}
            unknown = set(opts) - EXPERT_OPTIONS
            if unknown:
                raise ValueError(f"{model_config}: unknown expert options {sorted(unknown)} (known: {sorted(EXPERT_OPTIONS)})")
            self.num_layers = opts.get("num_layers")
        if kwargs:
            logger.debug("ignoring s3prl options %s", sorted(kwargs))

    def get_downsample_rates(self, key: str) -> int:
        return self.model.downsample_rate

    def forward(self, wavs: List[Tensor]) -> Dict[str, Any]:
        wavs = check_waveforms(wavs, self.model.min_samples)
        x, lengths = pad_waveforms(wavs)
        out = self.model(x, lengths, num_layers=self.num_layers)
        return {"hidden_states": out.hidden_states, "last_hidden_state": out.hidden_states[-1]}
