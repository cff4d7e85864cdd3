"""The s3prl expert that runs an exported ONNX graph (``s3prl.hub.onnx_local(ckpt=FILE.onnx)``).

So that the stock SUPERB runner, the probes and ESPnet's S3PRL front-end measure exactly what is
deployed: the graph of :mod:`s3prl_plugins.deploy.onnx` (float32 or int8) under onnxruntime's CPU
provider, with the expert contract of :class:`~s3prl_plugins.upstream.expert.UpstreamExpert`
(``forward(list of 1-D waveforms)`` -> ``{"hidden_states": [...], "last_hidden_state": ...}``,
``get_downsample_rates``). The stride and the shortest input come from the file's metadata.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from s3prl_plugins.models.ssl_model import pad_waveforms
from s3prl_plugins.upstream.expert import HIDDEN_STATES, check_waveforms, read_expert_options

logger = logging.getLogger(__name__)

ONNX_OPTIONS = {"hidden_states", "num_layers", "threads"}


class OnnxUpstreamExpert(nn.Module):
    """s3prl expert around an exported ONNX graph.

    Args:
        ckpt: the ``.onnx`` file written by ``python -m s3prl_plugins.bin.export``.
        model_config: optional YAML of expert options: ``hidden_states`` (``all`` / ``layers``, as
            :class:`~s3prl_plugins.upstream.expert.UpstreamExpert`), ``num_layers`` (keep the first layers'
            states; the graph still runs them all), ``threads`` (onnxruntime intra-op threads; default
            torch's thread count).
        hidden_states, threads: as the options (a keyword wins over the YAML).
    """

    def __init__(
        self,
        ckpt: Optional[str] = None,
        model_config: Optional[str] = None,
        hidden_states: Optional[str] = None,
        threads: Optional[int] = None,
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
        self.path = str(ckpt)
        if kwargs:
            logger.debug("ignoring s3prl options %s", sorted(kwargs))

    def get_downsample_rates(self, key: str) -> int:
        return self.downsample_rate

    def forward(self, wavs: List[Tensor]) -> Dict[str, Any]:
        wavs = check_waveforms(wavs, self.min_samples)
        x, lengths = pad_waveforms(wavs)
        device = x.device
        states, _ = self.session.run(
            None, {"waveforms": x.detach().float().cpu().numpy(), "lengths": lengths.cpu().numpy()}
        )
        states = torch.from_numpy(states).to(device)
        if self.num_layers is not None:
            states = states[: self.num_layers + 1]
        hidden = list(states.unbind(0))
        if self.hidden_states_layout == "layers":
            hidden = hidden[1:]
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1]}
