"""int8 of an exported graph, in three modes (``bin.export --int8 MODE``):

* ``matmul`` -- dynamic int8 (onnxruntime's ``quantize_dynamic``) of the transformer layers' matrix
  multiplications with a constant weight, per output channel; everything else float32. Needs no data.
* ``all`` -- ``matmul`` plus static int8 (QDQ, onnxruntime's ``quantize_static``) of the waveform CNN's
  convolutions, their activation ranges calibrated on the recipe's own audio (``calibration``), with
  accuracy-aware exclusion: every convolution is quantised, and while the states disagree with the
  float32 graph's on the calibration audio by more than ``min_cosine`` allows, the convolution whose int8
  alone costs most is put back to float32 (the loop of OpenVINO's AccuracyAwareQuantization, which for
  wav2vec 2.0 reverted its first convolutions). The convolutions kept float32 and why are named in the
  log and in the graph's metadata.
* ``auto`` (``bin.export --int8``'s default) -- ``all`` where calibration audio is given and the result
  measures at least 5 % faster than ``matmul`` on this machine's CPU (:data:`AUTO_MARGIN`); otherwise
  ``matmul``.

Why these forms (measured on a 2-core Xeon with AVX-512 VNNI and AMX, onnxruntime 1.32, STaRHuBERT at
10 s, 2 threads; bench/RESULTS.md, ``bench_deploy.py``):

* The CNN's convolutions are static QDQ: onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into
  ``QLinearConv`` (21 ms against 93 ms for the float Conv nodes). Dynamic int8 of convolutions
  (``ConvInteger``) is the form that made wav2vec 2.0 slower in espnet/espnet_onnx#25.
* The GELU between two convolutions must be one node (ONNX ``Gelu``, opset 20: :data:`~.onnx.OPSET`):
  written as the five ops of erf, the DequantizeLinear before it has two consumers, which onnxruntime
  duplicates (one per consumer) and which keeps it from fusing the GELU -- 114 ms for the CNN, against 70.
* The attention's products of two activations (q.k, p.v) stay float32: static ``QLinearMatMul`` took 52 ms
  where the float products take 29. The positional convolution (a grouped 128-tap Conv: 12 of STaRHuBERT's
  ~165 ms after int8, 27 of HuBERT BASE's ~350) and the first layer's normalisation stay float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from s3prl_plugins.deploy import graph
from s3prl_plugins.deploy.graph import (
    QUANTIZED_OPS,
    save_graph,
    set_metadata,
    temp_files_in,
    weight_bytes,
    weight_matmuls,
    work_folder,
)
from s3prl_plugins.deploy.graph_model import ExportError

logger = logging.getLogger(__name__)

INT8_MODES = ("matmul", "all", "auto")
# The lowest per-layer mean cosine (int8 against float32 states, over the calibration audio's frames) that
# ``all`` accepts. Dynamic int8 of the matmuls alone gives 0.9999 on STaRHuBERT; 0.999 leaves the
# convolutions room while keeping every layer's states within ~4 % (sqrt(2 (1 - cos))) of float32.
MIN_COSINE = 0.999
# Calibration (s3prl_plugins.data.audio.audio_sample): at most this many utterances, each cut to at most this
# many seconds (ranges settle within a few utterances; every trial of the exclusion loop runs them all).
CALIBRATION_UTTERANCES = 8
CALIBRATION_SECONDS = 10.0
# auto keeps the int8 convolutions only when their graph runs at most this fraction of the matmul graph's time
# (a margin over timing noise, so that two exports on one machine choose alike)
AUTO_MARGIN = 0.95


class CalibrationError(ExportError):
    """Calibration audio that is missing or unusable; the message names the file and the fix."""


@dataclass
class Int8Report:
    """What :func:`quantize_int8` did: the mode it wrote, the convolutions in int8 and those kept float32
    (with the lowest layer cosine of each one's int8 alone), the measured agreement and, for ``auto``, the
    speeds it chose by."""

    mode: str
    int8_convs: List[str] = field(default_factory=list)
    float_convs: Dict[str, float] = field(default_factory=dict)
    cosine: Optional[float] = None
    seconds: Dict[str, float] = field(default_factory=dict)

    def metadata(self) -> Dict[str, str]:
        meta = {
            "s3prl_plugins.int8_mode": self.mode,
            "s3prl_plugins.int8_convs": ",".join(self.int8_convs),
            "s3prl_plugins.int8_float_convs": ",".join(f"{k}:{v:.5f}" for k, v in self.float_convs.items()),
        }
        if self.cosine is not None:
            meta["s3prl_plugins.int8_cosine"] = f"{self.cosine:.5f}"
        if self.seconds:
            meta["s3prl_plugins.int8_auto_seconds"] = ",".join(f"{k}:{v:.4f}" for k, v in self.seconds.items())
        return meta


def conv_candidates(proto) -> Dict[str, str]:
    """The waveform CNN's Conv nodes, ``{node name: "conv_layers.<i>"}`` in graph order (found by their
    weights, ``...frontend.conv_layers.<i>.conv.weight``; the positional convolution is not one)."""
    out = {}
    for node in proto.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and ".frontend.conv_layers." in node.input[1]:
            layer = node.input[1].split(".frontend.conv_layers.", 1)[1].split(".", 1)[0]
            out[node.name] = f"conv_layers.{layer}"
    return out


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantiser logs one INFO line per tensor and advises shape pre-processing on the root logger;
    neither says anything about this graph."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _session(path: str, threads: Optional[int] = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _feeds(audio: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
    return [{"waveforms": a[None].astype(np.float32), "lengths": np.array([a.size], dtype=np.int64)} for a in audio]


def _run(path: str, feeds) -> List[np.ndarray]:
    session = _session(path)
    return [session.run(["hidden_states"], f)[0][:, 0] for f in feeds]  # (layers + 1, frames, dim) each


def lowest_layer_cosine(states: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """min over layers of the mean cosine (over every frame of every utterance) between two graphs' states."""
    per_layer = []
    for a, b in zip(states, reference):
        a, b = a.astype(np.float64), b.astype(np.float64)
        dot = (a * b).sum(-1)
        norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        per_layer.append(np.where(norm > 0, dot / np.maximum(norm, 1e-30), 1.0))  # (layers, frames)
    return float(np.concatenate(per_layer, axis=1).mean(1).min())


def _dynamic_matmuls(src: str, out: str, per_channel: bool) -> int:
    """Dynamic int8 of ``src``'s layer matmuls into ``out`` (plain write; the caller makes it atomic)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(src)
    nodes = weight_matmuls(proto)
    if not nodes:
        raise ExportError(
            f"{src}: no matrix multiplication with a weight is left in the transformer layers (every head and FFN "
            "unit pruned?): int8 has nothing to quantise; deploy the float32 graph"
        )
    exclude = [n.name for n in proto.graph.node if n.op_type in QUANTIZED_OPS and n.name not in set(nodes)]
    with _quiet_quantizer():
        quantize_dynamic(
            src,
            out,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=exclude,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
            use_external_data_format=weight_bytes(proto) >= graph.PROTOBUF_LIMIT,
        )
    return len(nodes)


class _StaticConvs:
    """Static QDQ int8 of a chosen set of the CNN's convolutions, calibrated once (the ranges are cached)."""

    def __init__(self, src: str, work: str, audio: Sequence[np.ndarray], per_channel: bool):
        self.src, self.work, self.audio, self.per_channel = src, work, audio, per_channel
        self.cache = os.path.join(work, "calibration.json")
        self.trials = 0
        import onnx

        proto = onnx.load(src, load_external_data=False)  # a graph written with its weights beside it stays so
        self.big = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
        self.big = self.big or weight_bytes(proto) >= graph.PROTOBUF_LIMIT

    def write(self, nodes: Sequence[str], out: str) -> str:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        feeds = iter(_feeds(self.audio))

        class Reader(CalibrationDataReader):
            def get_next(self):
                return next(feeds, None)

        with _quiet_quantizer(), temp_files_in(self.work):
            quantize_static(
                self.src,
                out,
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                nodes_to_quantize=list(nodes),
                per_channel=self.per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibration_cache_path=self.cache,
                use_external_data_format=self.big,
            )
        self.trials += 1
        return out


def _time_graph(path: str, feeds, repeats: int = 3) -> float:
    """Median seconds of one pass over ``feeds`` (after a warm-up pass)."""
    session = _session(path)
    for f in feeds:
        session.run(["hidden_states"], f)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for f in feeds:
            session.run(["hidden_states"], f)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def quantize_int8(
    src: str,
    out: str,
    per_channel: bool = True,
    mode: str = "matmul",
    calibration: Optional[Sequence[np.ndarray]] = None,
    min_cosine: float = MIN_COSINE,
) -> Int8Report:
    """int8 of the float32 graph ``src`` into ``out`` (atomic), in ``mode`` (see the module's docstring).

    Args:
        src: a graph written by :func:`s3prl_plugins.deploy.onnx.to_onnx`.
        out: the .onnx file to write.
        per_channel: one scale per output channel of every weight (else per tensor).
        mode: ``matmul``, ``all`` or ``auto``.
        calibration: 16 kHz waveforms (:func:`s3prl_plugins.data.audio.audio_sample`); ``all`` needs them,
            ``auto`` uses them.
        min_cosine: the agreement ``all`` keeps (:func:`lowest_layer_cosine` on the calibration audio).

    Raises:
        ExportError: nothing to quantise, ``out`` cannot be written.
        CalibrationError: ``all`` without calibration audio.
    """
    import onnx

    if mode not in INT8_MODES:
        raise ExportError(f"int8 mode {mode!r}: choose one of {', '.join(INT8_MODES)}")
    if not 0 < min_cosine <= 1:
        raise ExportError(f"min_cosine {min_cosine}: must be in (0, 1]")
    proto = onnx.load(src, load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    candidates = conv_candidates(proto)
    del proto
    if mode == "all" and not calibration and candidates:
        raise CalibrationError(
            f"{src}: --int8 all quantises the CNN's convolutions with activation ranges measured on audio; "
            "give it with --calibration DATA_DIR (the recipe's dev set, e.g. data/dev), or use --int8 matmul"
        )
    work = work_folder(out)
    try:
        src = _staged(src, work)  # onnxruntime's quantisers write <src>-inferred.onnx beside src: in here instead
        matmul = os.path.join(work, "matmul.onnx")
        count = _dynamic_matmuls(src, matmul, per_channel)
        report = Int8Report(mode="matmul")
        chosen = matmul
        if mode != "matmul" and not candidates:
            logger.info("int8 %s: the model has no waveform CNN (a log-Mel front-end): matmuls only", mode)
        elif mode == "auto" and not calibration:
            logger.info(
                "int8 auto: no calibration audio, so the CNN's convolutions stay float32 (matmuls only); give "
                "--calibration DATA_DIR to quantise them too"
            )
        elif mode != "matmul":
            chosen, report = _with_convs(src, work, matmul, candidates, calibration, per_channel, min_cosine)
            if mode == "auto" and chosen != matmul:
                feeds = _feeds(calibration[:2])
                t_matmul, t_all = _time_graph(matmul, feeds), _time_graph(chosen, feeds)
                report.seconds = {"matmul": t_matmul, "all": t_all}
                if t_all > AUTO_MARGIN * t_matmul:
                    logger.info(
                        "int8 auto: the int8 convolutions measured less than %d %% faster here (%.3f s vs %.3f s per "
                        "pass over the calibration audio): matmuls only",
                        round(100 * (1 - AUTO_MARGIN)),
                        t_all,
                        t_matmul,
                    )
                    chosen, report = matmul, Int8Report(mode="matmul", seconds=report.seconds)
                else:
                    logger.info("int8 auto: convolutions too (%.3f s vs %.3f s matmuls only)", t_all, t_matmul)
        if report.cosine is None and calibration:  # matmuls only, audio given: that graph's agreement, measured
            report.cosine = lowest_layer_cosine(_run(chosen, _feeds(calibration)), _run(src, _feeds(calibration)))
        q = onnx.load(chosen)
        meta["s3prl_plugins.int8"] = "per_channel" if per_channel else "per_tensor"
        meta.update(report.metadata())
        set_metadata(q, meta)
        save_graph(q, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(
        "int8 (%s): %d matrix multiplications, %d of %d CNN convolutions%s; %s (%.1f MB)",
        report.mode,
        count,
        len(report.int8_convs),
        len(candidates),
        "".join(f"; {k} kept float32 (alone: cosine {v:.4f})" for k, v in report.float_convs.items()),
        out,
        os.path.getsize(out) / 1e6,
    )
    return report


def _staged(src: str, work: str) -> str:
    """``src`` linked into ``work`` (the external weight files it names copied: onnx refuses linked ones), so that
    what onnxruntime's quantisers write beside their input lands in the work folder, never beside the user's
    file."""
    import onnx

    folder = os.path.dirname(os.path.abspath(src))
    link = os.path.join(work, "source.onnx")
    os.symlink(os.path.abspath(src), link)
    proto = onnx.load(src, load_external_data=False)
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            location = next(e.value for e in t.external_data if e.key == "location")
            target = os.path.join(work, location)
            if not os.path.lexists(target):  # onnx refuses weights behind a symbolic or hard link: a copy
                shutil.copyfile(os.path.join(folder, location), target)
    return link


def _with_convs(src, work, matmul, candidates, calibration, per_channel, min_cosine):
    """``all``: the accuracy-aware loop. Returns (the graph to keep, its report)."""
    feeds = _feeds(calibration)
    reference = _run(src, feeds)
    names = list(candidates)
    floor = lowest_layer_cosine(_run(matmul, feeds), reference)
    if floor < min_cosine:  # the matmuls alone miss the target: no convolution can help
        logger.warning(
            "int8 all: the matmuls' int8 alone gives a lowest layer cosine of %.5f, under the target %g, so the CNN's "
            "convolutions stay float32 (matmuls only; per-channel scales -- no --per-tensor -- or --int8 matmul with "
            "a lower expectation)",
            floor,
            min_cosine,
        )
        return matmul, Int8Report(mode="matmul", cosine=floor)
    static = _StaticConvs(src, work, calibration, per_channel)
    solo: Dict[str, float] = {}

    def trial(nodes, with_matmuls=True) -> str:
        """A graph with ``nodes`` in static int8 (and the matmuls in dynamic int8), in a file of its own."""
        convs = static.write(nodes, os.path.join(work, f"convs{static.trials}.onnx"))
        if not with_matmuls:
            return convs
        path = os.path.join(work, f"all{static.trials}.onnx")
        _dynamic_matmuls(convs, path, per_channel)
        _remove_graph(convs)
        return path

    keep = list(names)
    path = trial(keep)
    cosine = lowest_layer_cosine(_run(path, feeds), reference)
    logger.info("int8 all: every CNN convolution in int8: lowest layer cosine %.5f (target %g)", cosine, min_cosine)
    while cosine < min_cosine and keep:
        if not solo:  # each convolution's int8 alone, against float32: the order to put them back in
            for n in names:
                one = trial([n], with_matmuls=False)
                solo[n] = lowest_layer_cosine(_run(one, feeds), reference)
                _remove_graph(one)
                logger.info("int8 all: %s alone in int8: lowest layer cosine %.5f", candidates[n], solo[n])
        worst = min(keep, key=lambda n: solo[n])
        keep.remove(worst)
        _remove_graph(path)
        if not keep:
            break
        path = trial(keep)
        cosine = lowest_layer_cosine(_run(path, feeds), reference)
        logger.info("int8 all: %s back to float32: lowest layer cosine %.5f", candidates[worst], cosine)
    if not keep:
        logger.warning(
            "int8 all: no CNN convolution can be int8 within cosine %g of float32 on the calibration audio: "
            "matmuls only",
            min_cosine,
        )
        path, cosine = matmul, floor
    report = Int8Report(
        mode="all" if keep else "matmul",
        int8_convs=[candidates[n] for n in keep],
        float_convs={candidates[n]: solo[n] for n in names if n not in keep},
        cosine=cosine,
    )
    return path, report


def _remove_graph(path: str) -> None:
    """A trial's graph and the weights written beside it (a large graph's), so the work folder holds one."""
    for f in (path, path + ".data"):
        if os.path.exists(f):
            os.remove(f)
