"""The s3prl expert that runs an exported ONNX graph (``s3prl.hub.onnx_local(ckpt=FILE.onnx)``).

So that the stock SUPERB runner, the probes and ESPnet's S3PRL front-end measure exactly what is
deployed: the graph of :mod:`s3prl_plugins.deploy.onnx` (float32 or int8) under onnxruntime's CPU
provider, with the expert contract of :class:`~s3prl_plugins.upstream.expert.UpstreamExpert`
(``forward(list of 1-D waveforms)`` -> ``{"hidden_states": [...], "last_hidden_state": ...}``,
``get_downsample_rates``). The stride and the shortest input come from the file's metadata.

Inference only: onnxruntime computes no gradient, so the states carry none, and waveforms that require
grad while gradients are recorded are refused, naming the torch entry to fine-tune with. A backward pass
through the states is not refused: a weighted sum trained on top of them (s3prl's Featurizer, ESPnet's
front-end) backpropagates into them and must stop there silently; a loss whose only inputs are the states
fails in torch ("does not require grad").
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from s3prl_plugins.models.ssl_model import pad_waveforms
from s3prl_plugins.nn.subsampling import FIXED_SUBSAMPLING
from s3prl_plugins.upstream.expert import HIDDEN_STATES, InputError, check_waveforms, read_expert_options

logger = logging.getLogger(__name__)

ONNX_OPTIONS = {"hidden_states", "num_layers", "threads", "window_seconds", "context_seconds"}

# Long inputs. The graph's attention holds (heads, frames, frames) per layer: its memory grows with the square of
# the input's length (a 10-minute clip through a HuBERT BASE graph asked onnxruntime for ~20 GB). An utterance
# longer than WINDOW_SECONDS + 2 CONTEXT_SECONDS therefore runs in windows: each keeps WINDOW_SECONDS of frames
# and sees CONTEXT_SECONDS of audio on either side, so that memory is that of a 40 s input however long the
# clip (as transformers' pipelines chunk wav2vec 2.0 with a stride). Windows start on a multiple of the frame
# stride, so frame k of a window is frame start / stride + k of the whole utterance, and the stitched states
# have exactly the whole utterance's frames. They differ from the whole utterance's states by what a window
# cannot see: attention beyond its context, and the first CNN layer's GroupNorm / waveform normalisation over
# the window instead of the clip (tests/upstream/test_long_inputs.py measures it).
WINDOW_SECONDS = 30.0
CONTEXT_SECONDS = 5.0


class OnnxUpstreamExpert(nn.Module):
    """s3prl expert around an exported ONNX graph.

    Args:
        ckpt: the ``.onnx`` file written by ``python -m s3prl_plugins.bin.export``.
        model_config: optional YAML of expert options: ``hidden_states`` (``all`` / ``layers``, as
            :class:`~s3prl_plugins.upstream.expert.UpstreamExpert`), ``num_layers`` (keep the first layers'
            states; the graph still runs them all), ``threads`` (onnxruntime intra-op threads; default
            torch's thread count).
        hidden_states, threads: as the options (a keyword wins over the YAML).
        window_seconds, context_seconds: long inputs in windows (:data:`WINDOW_SECONDS`); ``window_seconds=0``
            runs every input whole (memory grows with the square of its length).
    """

    def __init__(
        self,
        ckpt: Optional[str] = None,
        model_config: Optional[str] = None,
        hidden_states: Optional[str] = None,
        threads: Optional[int] = None,
        window_seconds: Optional[float] = None,
        context_seconds: Optional[float] = None,
        **kwargs: Any,
    ):
        super().__init__()
        import onnxruntime as ort

        if not ckpt:
            raise ValueError("pass ckpt=PATH of an .onnx file written by python -m s3prl_plugins.bin.export")
        if not os.path.isfile(ckpt):
            raise FileNotFoundError(f"{ckpt}: no such ONNX file")
        opts: Dict[str, Any] = {}
        if model_config:
            opts, _ = read_expert_options(str(model_config), known=ONNX_OPTIONS)
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or opts.get("threads") or torch.get_num_threads())
        so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(ckpt), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: say what is expected
            raise ValueError(f"{ckpt}: onnxruntime cannot load it ({type(e).__name__}: {e})") from e
        names = [i.name for i in self.session.get_inputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        if names != ["waveforms", "lengths"] or "s3prl_plugins.downsample_rate" not in meta:
            raise ValueError(
                f"{ckpt}: not a graph of python -m s3prl_plugins.bin.export (inputs {names}, metadata {sorted(meta)}); "
                "export the model with it first"
            )
        self.downsample_rate = int(meta["s3prl_plugins.downsample_rate"])
        self.min_samples = int(meta["s3prl_plugins.min_samples"])
        self.num_layers: Optional[int] = opts.get("num_layers")
        layout = hidden_states or opts.get("hidden_states", "all")
        if layout not in HIDDEN_STATES:
            raise ValueError(f"hidden_states={layout!r}: choose one of {HIDDEN_STATES}")
        self.hidden_states_layout = layout
        self.window_seconds = float(
            window_seconds if window_seconds is not None else opts.get("window_seconds", WINDOW_SECONDS)
        )
        self.context_seconds = float(
            context_seconds if context_seconds is not None else opts.get("context_seconds", CONTEXT_SECONDS)
        )
        if self.window_seconds < 0 or self.context_seconds < 0:
            raise ValueError("window_seconds and context_seconds must be >= 0 (window_seconds=0: inputs whole)")
        # CIF's (or given segments') frames follow the content, a variable rate (nn.subsampling.Subsampler.variable:
        # anything but fixed pooling): windows of it could not be stitched frame by frame
        config = json.loads(meta.get("s3prl_plugins.config", "{}"))
        subsampling = config.get("subsampling") or {}
        self.rate_varies = bool(subsampling) and subsampling.get("type") not in FIXED_SUBSAMPLING
        # the torch entry of the checkpoint this graph was exported from: what fine-tunes it
        self.torch_entry = (
            "melhubert_local"
            if config.get("frontend") == "logmel"
            else "distilhubert_cif_local"
            if self.rate_varies
            else "star_hubert_local"
        )
        self.path = str(ckpt)
        if kwargs:
            logger.debug("ignoring s3prl options %s", sorted(kwargs))

    def get_downsample_rates(self, key: str) -> int:
        return self.downsample_rate

    def _run(self, wavs: List[Tensor]) -> Tensor:
        """The graph on a padded batch: (layers + 1, batch, frames, dim) float32 on the CPU."""
        x, lengths = pad_waveforms(wavs)
        states, _ = self.session.run(
            None, {"waveforms": x.detach().float().cpu().numpy(), "lengths": lengths.cpu().numpy()}
        )
        return torch.from_numpy(states)

    def _run_long(self, wav: Tensor) -> Tensor:
        """One long utterance in windows (:data:`WINDOW_SECONDS`): (layers + 1, frames, dim). The last window
        ends at the utterance's end, so its frame count gives the whole utterance's, whatever the front-end.
        The states are written into one tensor as they come (sized for at most a frame per stride of samples,
        then narrowed): one copy of the output, whatever the number of windows."""
        stride = self.downsample_rate
        keep = max(1, round(self.window_seconds * 16000 / stride))  # frames each window keeps
        context = round(self.context_seconds * 16000 / stride)  # frames of audio seen on either side
        n, a, states = wav.numel(), 0, None
        while True:
            start = max(0, a - context)  # in frames: the window's audio starts on a frame boundary
            end = min(n, (a + keep + context) * stride + self.min_samples)
            out = self._run([wav[start * stride : end]])[:, 0]
            if states is None:
                states = out.new_empty(out.shape[0], n // stride + 1, out.shape[-1])
            piece = out[:, a - start :] if end == n else out[:, a - start : a - start + keep]
            states[:, a : a + piece.shape[1]] = piece
            if end == n:
                return states[:, : a + piece.shape[1]]
            a += keep

    def forward(self, wavs: List[Tensor]) -> Dict[str, Any]:
        # a gradient asked of the input (s3prl's own pseudo-waveforms require grad, but come under no_grad)
        if torch.is_grad_enabled() and any(isinstance(w, Tensor) and w.requires_grad for w in wavs):
            raise InputError(
                f"onnx_local runs an exported graph under onnxruntime: inference only, no gradient reaches its "
                f"input or its weights. To fine-tune, load the checkpoint it was exported from with "
                f"{self.torch_entry} (s3prl.hub.{self.torch_entry}(ckpt=model.pt)); to extract features, pass "
                "waveforms that do not require grad"
            )
        wavs = check_waveforms(wavs, self.min_samples)
        device = wavs[0].device
        limit = (self.window_seconds + 2 * self.context_seconds) * 16000
        long = [i for i, w in enumerate(wavs) if self.window_seconds and w.numel() > limit]
        if long and self.rate_varies:
            raise InputError(
                f"waveform {long[0]} is {wavs[long[0]].numel() / 16000:.1f} s: a CIF graph's frame rate varies, so "
                f"it cannot run in windows, and whole its attention memory grows with the square of the length. "
                f"Cut the audio into pieces of at most {limit / 16000:.0f} s, or pass window_seconds=0 to run it whole"
            )
        if not long:
            states = self._run(wavs)
        elif len(wavs) == 1:
            states = self._run_long(wavs[0]).unsqueeze(1)
        else:  # each long utterance in windows, the others whole; padded to the longest as the graph pads
            parts = [self._run_long(w) if i in long else self._run([w])[:, 0] for i, w in enumerate(wavs)]
            states = torch.zeros(parts[0].shape[0], len(parts), max(p.shape[1] for p in parts), parts[0].shape[-1])
            for i, p in enumerate(parts):
                states[:, i, : p.shape[1]] = p
            del parts
        states = states.to(device)
        if self.num_layers is not None:
            states = states[: self.num_layers + 1]
        hidden = list(states.unbind(0))
        if self.hidden_states_layout == "layers":
            hidden = hidden[1:]
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1]}
