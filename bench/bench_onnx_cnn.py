"""The waveform CNN alone as an ONNX graph under onnxruntime: which form is fastest (issue 30's "fast path
in the graph"), measured rather than assumed.

Forms, each exported from the same modules and checked against the plain CNN:

* ``plain`` -- what ``bin.export`` writes: Conv, the first layer's GroupNorm (InstanceNormalization), GELU.
* ``folded`` -- the torch CPU fast path's folded GroupNorm in ONNX ops: the first layer's input unfolded
  (a Conv with identity filters), its mean and covariance per utterance (float64), the GroupNorm folded
  into per-utterance weights applied as one batched MatMul (see
  :meth:`s3prl_plugins.nn.frontends.ConvFeatureExtractor.forward_chunked`).
* ``chunked`` -- ``folded`` plus the chunked CNN: windows of output frames, each with its receptive field,
  gathered into the batch axis, the later layers run over them, the frames put back in order.
* ``int8 erf`` / ``int8 gelu`` -- ``plain`` with static int8 of every convolution (QDQ, calibrated on the
  input), GELU written as the five ops of erf (opset 17) or as one ONNX ``Gelu`` node (opset 20, what
  ``bin.export`` writes now).

    python bench/bench_onnx_cnn.py                   # star_hubert's CNN, 10 s, 2 threads
    python bench/bench_onnx_cnn.py --preset hubert_base --chunk 50 100 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from s3prl_plugins.models import build_model  # noqa: E402
from s3prl_plugins.models.factories import preset_config  # noqa: E402


class Plain(nn.Module):
    def __init__(self, fe):
        super().__init__()
        self.fe = fe

    def forward(self, w):
        x = w.unsqueeze(1)
        for b in self.fe.conv_layers:
            x = b.conv(x)
            if b.norm_kind == "group_norm":
                x = b.norm(x)
            x = F.gelu(x)
        return x.transpose(1, 2)


class Folded(Plain):
    def fold(self, w):
        """(unfolded input (B, K, T0), folded weights (B, C, K), folded bias (B, C, 1))."""
        first = self.fe.conv_layers[0]
        _, kernel, stride = self.fe.specs[0]
        eye = torch.eye(kernel, dtype=w.dtype).unsqueeze(1)
        u = F.conv1d(w.unsqueeze(1), eye, stride=stride)
        ud = u.double()
        mean = ud.mean(2)
        centred = ud - mean[:, :, None]
        cov = centred @ centred.transpose(1, 2) / ud.size(2)
        wd = first.conv.weight[:, 0].double()
        var = ((wd @ cov) * wd).sum(-1)
        scale = first.norm.weight.double() / torch.sqrt(var + first.norm.eps)
        bias = first.norm.bias.double() - (mean @ wd.T) * scale
        return u, (wd * scale[:, :, None]).float(), bias.float()[:, :, None]

    def forward(self, w):
        u, wf, bf = self.fold(w)
        x = F.gelu(wf @ u + bf)
        for b in self.fe.conv_layers[1:]:
            x = F.gelu(b.conv(x))
        return x.transpose(1, 2)


class Chunked(Folded):
    def __init__(self, fe, frames):
        super().__init__(fe)
        self.frames = frames

    def forward(self, w):
        batch = w.size(0)
        u, wf, bf = self.fold(w)  # (B, K, T0)
        rate, field = 1, 1  # first-layer frames per output frame, and per output frame's receptive field
        for _, k, s in reversed(self.fe.specs[1:]):
            field, rate = (field - 1) * s + k, rate * s
        t0 = u.size(2)
        frames = torch.div(t0 - field, rate, rounding_mode="floor") + 1
        n = torch.div(frames + self.frames - 1, self.frames, rounding_mode="floor")
        window = (self.frames - 1) * rate + field
        index = (torch.arange(n)[:, None] * (self.frames * rate) + torch.arange(window)[None, :]).clamp(max=t0 - 1)
        x = wf[:, None] @ u[:, :, index].permute(0, 2, 1, 3) + bf[:, None]  # (B, n, C, window)
        x = F.gelu(x).reshape(-1, x.size(2), window)
        for b in self.fe.conv_layers[1:]:
            x = F.gelu(b.conv(x))
        x = x.reshape(batch, -1, x.size(1), self.frames).permute(0, 1, 3, 2).reshape(batch, -1, x.size(1))
        return x[:, :frames]


def export(module, path, opset):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.randn(2, 16000) * 0.1,),
            path,
            input_names=["w"],
            output_names=["y"],
            dynamic_axes={"w": {0: "b", 1: "t"}, "y": {0: "b", 1: "f"}},
            opset_version=opset,
            dynamo=False,
        )
    return path


def quantize(src, out, audio):
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    feeds = iter([{"w": audio}])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(
        src,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def main() -> int:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="star_hubert")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--chunk", type=int, nargs="*", default=[100], help="output frames per chunk (chunked form)")
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = build_model(preset_config(args.preset).replace(head=None, mask_embedding=False)).eval()
    fe = model.frontend
    wav = torch.randn(1, int(16000 * args.seconds)) * 0.1
    with torch.no_grad():
        ref = Plain(fe)(wav).numpy()
    with tempfile.TemporaryDirectory() as d:
        forms = {"plain": export(Plain(fe), f"{d}/plain.onnx", 20), "folded": export(Folded(fe), f"{d}/fold.onnx", 20)}
        for c in args.chunk:
            forms[f"chunked ({c} frames)"] = export(Chunked(fe, c), f"{d}/chunk{c}.onnx", 20)
        forms["int8 erf (opset 17)"] = quantize(export(Plain(fe), f"{d}/p17.onnx", 17), f"{d}/q17.onnx", wav.numpy())
        forms["int8 gelu (opset 20)"] = quantize(forms["plain"], f"{d}/q20.onnx", wav.numpy())
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sessions = {k: ort.InferenceSession(v, so, providers=["CPUExecutionProvider"]) for k, v in forms.items()}
        feeds = {"w": wav.numpy()}
        diffs = {k: float(np.abs(s.run(None, feeds)[0] - ref).max() / np.abs(ref).max()) for k, s in sessions.items()}
        times = {k: [] for k in sessions}
        for _ in range(args.repeats):  # interleaved
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, feeds)
                times[k].append(time.perf_counter() - t)
    base = statistics.median(times["plain"])
    print(f"{args.preset} CNN, batch 1 x {args.seconds:g} s, {args.threads} threads, median of {args.repeats}")
    print("| form | ms | vs plain | max rel. diff to the plain CNN (torch) |")
    print("|---|---|---|---|")
    for k, v in times.items():
        m = statistics.median(v)
        print(f"| {k} | {m * 1e3:.1f} | {base / m:.2f}x | {diffs[k]:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
