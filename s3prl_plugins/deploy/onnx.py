"""Export an :class:`SSLModel` to ONNX: waveform in, every hidden state out.

The graph (``torch.onnx.export``'s TorchScript-based exporter, opset 20: torch 2.8's dynamo exporter needs
``onnxscript``, which the project does not install, and traces our model no better; opset 20 writes GELU as
one ``Gelu`` node, which int8 of the CNN needs -- :mod:`s3prl_plugins.deploy.quantize` -- and which
onnxruntime runs from 1.17):

* inputs ``waveforms`` float32 (batch, samples) zero-padded 16 kHz audio, ``lengths`` int64 (batch,)
  valid samples;
* outputs ``hidden_states`` float32 (layers + 1, batch, frames, dim) -- the transformer input, then every
  layer, as :class:`~s3prl_plugins.upstream.expert.UpstreamExpert` returns them -- and
  ``output_lengths`` int64 (batch,), the valid frames of each utterance. (ONNX forbids an output named
  like an input, hence not ``lengths``.)

Batch and time are dynamic axes; the attention mask is built from ``lengths`` inside the graph, so a
padded batch gives the states PyTorch gives for the same batch. The model's facts travel in the file's
metadata (:data:`METADATA_KEYS`), which :mod:`s3prl_plugins.upstream.onnx_expert` reads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from typing import Dict, Optional

import torch

from s3prl_plugins.deploy.graph import disk_full_error, save_graph, set_metadata, work_folder
from s3prl_plugins.deploy.graph_model import ExportableModel, ExportError
from s3prl_plugins.models.checkpoint import is_disk_full
from s3prl_plugins.models.ssl_model import SSLModel

logger = logging.getLogger(__name__)

OPSET = 20
INPUT_NAMES = ("waveforms", "lengths")
OUTPUT_NAMES = ("hidden_states", "output_lengths")
METADATA_KEYS = (
    "s3prl_plugins.downsample_rate",
    "s3prl_plugins.min_samples",
    "s3prl_plugins.num_layers",
    "s3prl_plugins.dim",
    "s3prl_plugins.config",
)


def example_input(model: SSLModel, seconds: float = 1.0, batch: int = 2):
    """A padded batch to trace with (its shapes are not baked in: the axes are dynamic)."""
    samples = max(int(16000 * seconds), 4 * model.min_samples)
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(batch, samples, generator=g) * 0.1
    lengths = torch.tensor([samples] + [max(model.min_samples, samples * 2 // 3)] * (batch - 1), dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        wav[i, n:] = 0
    return wav, lengths


def _declare_states_shape(proto, layers: int, dim: int) -> None:
    """``hidden_states``' declared shape (layers + 1, batch, frames, dim): the trace leaves the layer count and
    the width symbolic where the states pass through a gather (a CIF model's segment-to-frame expansion), so
    a client reading the graph's signature would not learn them."""
    shape = proto.graph.output[0].type.tensor_type.shape
    for i, value in ((0, layers), (3, dim)):
        shape.dim[i].ClearField("dim_param")
        shape.dim[i].dim_value = value


def to_onnx(model: SSLModel, out: str, output_rate: str = "auto", metadata: Optional[Dict[str, str]] = None) -> str:
    """Write ``model`` (eval mode, float32) to ``out`` as ONNX, checked by ``onnx.checker``; atomic.

    Raises:
        ExportError: the model cannot be exported (the message says which part and what is supported), or
            ``out`` cannot be written.
    """
    import onnx

    model = model.float().eval()
    wrapper = ExportableModel(model, output_rate)
    wav, lengths = example_input(model)
    work = work_folder(out)  # torch writes a graph over 2 GiB as many weight files: they stay in here
    tmp = os.path.join(work, "model.onnx")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            # torch 2.8's notices about its own exporter (deprecated in favour of dynamo, which needs onnxscript)
            # and a slice its constant folder leaves unfolded: nothing about this graph
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=".*Only steps=1 can be constant folded.*")
            try:
                torch.onnx.export(
                    wrapper,
                    (wav, lengths),
                    tmp,
                    input_names=list(INPUT_NAMES),
                    output_names=list(OUTPUT_NAMES),
                    dynamic_axes={
                        "waveforms": {0: "batch", 1: "samples"},
                        "lengths": {0: "batch"},
                        "hidden_states": {1: "batch", 2: "frames"},
                        "output_lengths": {0: "batch"},
                    },
                    opset_version=OPSET,
                    do_constant_folding=True,
                    dynamo=False,
                )
            except Exception as e:  # noqa: BLE001 - name the op and the model
                if is_disk_full(e):
                    raise disk_full_error(out) from e
                raise ExportError(
                    f"{model.config.name or 'model'}: torch.onnx.export failed: {type(e).__name__}: {e}"
                ) from e
        proto = onnx.load(tmp)
        _declare_states_shape(proto, model.config.num_layers + 1, model.config.embed_dim)
        meta = {
            "s3prl_plugins.downsample_rate": str(wrapper.downsample_rate),
            "s3prl_plugins.min_samples": str(model.min_samples),
            "s3prl_plugins.num_layers": str(model.config.num_layers),
            "s3prl_plugins.dim": str(model.config.embed_dim),
            "s3prl_plugins.config": json.dumps(model.config.to_dict()),
            **(metadata or {}),
        }
        set_metadata(proto, meta)
        written = save_graph(proto, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote %s (%.1f MB)", " + ".join(written), sum(os.path.getsize(f) for f in written) / 1e6)
    return out
