"""The s3prl expert contract for every model of ours.

``UpstreamExpert(ckpt, model_config=None, **kwargs)``; ``forward(list of 1-D 16 kHz waveforms)``
returns ``{"hidden_states": [...], "last_hidden_state": ...}`` with ``num_layers + 1`` tensors
(batch, frames, dim); ``get_downsample_rates(key)`` gives the model's stride in samples.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from s3prl_plugins.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from s3prl_plugins.models.ssl_model import InputError, SSLModel, pad_waveforms

logger = logging.getLogger(__name__)

EXPERT_OPTIONS = {"num_layers", "hidden_states", "output_rate"}
HIDDEN_STATES = ("all", "layers")
OUTPUT_RATES = ("auto", "frontend", "encoder")


def check_waveforms(wavs: Sequence[Tensor], min_samples: int) -> List[Tensor]:
    """Validate a list of waveforms for a model; raises :class:`InputError` with the fix."""
    if len(wavs) == 0:
        raise InputError("no waveforms given")
    out = []
    for i, w in enumerate(wavs):
        if not isinstance(w, Tensor):
            raise InputError(f"waveform {i} is a {type(w).__name__}, not a torch.Tensor")
        if not w.is_floating_point():
            raise InputError(
                f"waveform {i} has dtype {w.dtype}: expected float samples in [-1, 1] (for 16-bit PCM "
                "divide by 32768: wav.float() / 32768)"
            )
        if w.dtype == torch.float64:  # numpy's default dtype: convert (float32 holds 16/24-bit audio exactly)
            w = w.float()
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
        peak = float(w.detach().abs().max())  # one pass: a NaN or Inf anywhere makes the peak non-finite
        if not math.isfinite(peak):
            raise InputError(f"waveform {i} contains NaN or Inf samples")
        if peak > PEAK_LIMIT and not _warned_peak:
            _warn_peak(i, peak)
        out.append(w)
    return out


# A float waveform peaking this far above full scale (1.0) is 16-bit PCM passed as float (wav.float()
# without / 32768): the features shift silently (MelHuBERT's log-Mel by ~0.28 per bin). Quiet 16-bit
# speech still peaks in the hundreds; hot but genuine float audio stays within a few times full scale.
PEAK_LIMIT = 16.0
_warned_peak = False


def _warn_peak(i: int, peak: float) -> None:
    global _warned_peak
    _warned_peak = True
    logger.warning(
        "waveform %d peaks at %.0f: expected float samples in [-1, 1]; these look like 16-bit PCM values passed as "
        "float -- divide by 32768 (wav / 32768) or load with s3prl_plugins.data.audio.load_audio / soundfile "
        "(said once per process)",
        i,
        peak,
    )


class UpstreamExpert(nn.Module):
    """s3prl expert around an :class:`SSLModel`.

    Args:
        ckpt: path of one of our checkpoints, or of a published STaRHuBERT Lightning ``.ckpt`` (or an
            already built model via ``model=``).
        model_config: optional YAML. For our checkpoints: expert options, ``num_layers`` (keep only
            the first layers) and ``hidden_states`` (``all``: the transformer input then every layer,
            ``num_layers + 1`` tensors, the default; ``layers``: the layer outputs only -- the layout of
            the STaR authors' expert, for like-for-like comparisons with their SUPERB entries). For a
            published ``.ckpt``: its published ``.yaml`` (``distiller:`` section), to which the same
            options may be added as top-level keys.
            A model with sequence subsampling also takes ``output_rate``: ``frontend`` (every state
            back at the front-end's frames: fixed subsampling repeated, CIF segments repeated over the
            frames they cover -- one fixed stride, what ``S3PRLUpstream`` / ESPnet need), ``encoder``
            (the encoder's own frames: for fixed subsampling an honestly declared coarser stride, for
            CIF the segments, variable per utterance, with ``"segment_lengths"`` in the output -- for our
            own probes, not for s3prl's runner), or ``auto`` (the default: ``encoder`` for fixed,
            ``frontend`` for variable-length subsampling).
        family: the architecture family the entry accepts (``conv`` models or ``melhubert``).
        hidden_states: as the option of that name (a keyword wins over the YAML).
        output_rate: as the option of that name (a keyword wins over the YAML).
    """

    def __init__(
        self,
        ckpt: Optional[str] = None,
        model_config: Optional[str] = None,
        family: Optional[str] = None,
        model: Optional[SSLModel] = None,
        hidden_states: Optional[str] = None,
        output_rate: Optional[str] = None,
        **kwargs: Any,
    ):
        super().__init__()
        opts: Dict[str, Any] = {}
        published_yaml = None
        if model_config:
            opts, published_yaml = read_expert_options(str(model_config))
        if model is None:
            if not ckpt:
                raise ValueError("pass ckpt=PATH of an s3prl-plugins checkpoint or a published STaRHuBERT .ckpt")
            model = load_expert_model(str(ckpt), family, published_yaml)
        self.model = model.eval()
        self.num_layers: Optional[int] = opts.get("num_layers")
        layout = hidden_states or opts.get("hidden_states", "all")
        if layout not in HIDDEN_STATES:
            raise ValueError(f"hidden_states={layout!r}: choose one of {HIDDEN_STATES}")
        self.hidden_states_layout = layout
        rate = output_rate or opts.get("output_rate", "auto")
        if rate not in OUTPUT_RATES:
            raise ValueError(f"output_rate={rate!r}: choose one of {OUTPUT_RATES}")
        sub = self.model.subsampler
        if sub is not None and sub.kind == "segments":
            raise ValueError(
                "this checkpoint is the forced-alignment topline (subsampling type 'segments'): it pools over "
                "segments given with the audio, which s3prl's runner cannot pass; probe it with "
                "python -m s3prl_plugins.bin.probe ... --segmentation FILE"
            )
        if rate == "auto":
            rate = "frontend" if (sub is not None and sub.variable) else "encoder"
        self.output_rate = rate
        if kwargs:
            logger.debug("ignoring s3prl options %s", sorted(kwargs))

    def get_downsample_rates(self, key: str) -> int:
        """Samples per output frame: the front-end's stride, or with ``output_rate=encoder`` and fixed
        subsampling the encoder's (front-end stride x subsampling stride). Variable-length output at the
        encoder's rate has no one stride: the front-end's is returned and ``segment_lengths`` says more."""
        if self.output_rate == "encoder":
            return self.model.config.encoder_downsample_rate or self.model.downsample_rate
        return self.model.downsample_rate

    def forward(self, wavs: List[Tensor]) -> Dict[str, Any]:
        wavs = check_waveforms(wavs, self.model.min_samples)
        x, lengths = pad_waveforms(wavs)
        x = x.to(next(self.model.parameters()).dtype)  # an expert cast with .half()/.bfloat16() takes float32 audio
        out = self.model(x, lengths, num_layers=self.num_layers)
        states = out.hidden_states if self.hidden_states_layout == "all" else out.hidden_states[1:]
        result: Dict[str, Any] = {}
        if self.model.subsampler is not None:
            if self.output_rate == "frontend":
                states = [self.model.to_frontend_rate(h, out) for h in states]
            elif self.model.subsampler.variable:
                result["segment_lengths"] = out.lengths
        result.update(hidden_states=states, last_hidden_state=states[-1])
        return result


def read_expert_options(path: str, known: Optional[set] = None) -> Tuple[Dict[str, Any], Optional[str]]:
    """``(expert options, path if it is a published STaRHuBERT .yaml else None)`` of a ``-g`` file;
    ``known``: the options the expert takes (default :data:`EXPERT_OPTIONS`)."""
    known = EXPERT_OPTIONS if known is None else known
    from s3prl_plugins.models.convert.star_lightning import read_yaml

    doc = read_yaml(path) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a YAML mapping of expert options, got {type(doc).__name__}")
    if "distiller" in doc:  # the published architecture yaml; its other sections are training settings
        return {k: v for k, v in doc.items() if k in known}, path
    unknown = set(doc) - known
    if unknown:
        raise ValueError(f"{path}: unknown expert options {sorted(unknown)} (known: {sorted(known)})")
    return doc, None


def load_expert_model(ckpt: str, family: Optional[str], published_yaml: Optional[str]) -> SSLModel:
    """Our checkpoint (checked against the entry's family), or a published STaRHuBERT ``.ckpt``."""
    from s3prl_plugins.models.convert import detect_format
    from s3prl_plugins.models.loading import model_from_checkpoint

    obj = read_checkpoint(ckpt)  # read once: published checkpoints are hundreds of MB
    fmt = detect_format(obj)
    if fmt == "star_lightning":
        if family not in (None, "star_hubert"):
            raise CheckpointError(f"{ckpt}: a published STaRHuBERT checkpoint; load it with star_hubert_local")
        return model_from_checkpoint(obj, ckpt, model_config=published_yaml)
    if fmt != "ours":
        raise CheckpointError(
            f"{ckpt}: a {fmt or 'unrecognised'} checkpoint, not one of ours nor a published STaRHuBERT .ckpt; "
            f"convert it first: python -m s3prl_plugins.bin.convert {ckpt} --out model.pt"
        )
    model, _ = load_checkpoint(ckpt, expect=family, ckpt=obj)
    return model
