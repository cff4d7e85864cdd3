"""int8 modes of an exported graph: static int8 of the CNN's convolutions calibrated on audio, the
accuracy-aware exclusion, ``auto``'s choice by measured speed, calibration audio checks and the CLI."""

import logging
import os
import re

import numpy as np
import pytest
import torch

from s3prl_plugins.deploy.graph_model import ExportError
from s3prl_plugins.models import build_model, star_hubert_config
from s3prl_plugins.models.checkpoint import save_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
sf = pytest.importorskip("soundfile")

CONV = [(16, 10, 5), (32, 1, 1), (32, 3, 2), (32, 2, 2)]


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = star_hubert_config(
        num_layers=2, num_heads=4, ffn_dim=48, conv_layers=CONV, embed_dim=32, pos_conv_kernel=8, pos_conv_groups=4
    )
    return build_model(cfg).eval()


def _audio(n, seconds=1.0, seed=0):
    g = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return [
        (
            0.1 * np.sin(2 * np.pi * (150 + 90 * i) * t) * (1 + 0.5 * np.sin(6 * t)) + 0.02 * g.standard_normal(t.size)
        ).astype(np.float32)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from s3prl_plugins.deploy.onnx import to_onnx

    folder = tmp_path_factory.mktemp("q")
    model = _model()
    return model, to_onnx(model, str(folder / "m.onnx"))


def _states(path, wav):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(["hidden_states"], {"waveforms": wav[None], "lengths": np.array([wav.size])})[0][:, 0]


def test_the_gelu_between_convolutions_is_one_node(graph):
    """Static int8 needs it (an erf GELU's two consumers make onnxruntime duplicate the DequantizeLinear and miss
    the fusion: 114 vs 70 ms for STaRHuBERT's CNN), so the graph is opset 20, where Gelu is an ONNX op."""
    proto = onnx.load(graph[1])
    ops = [n.op_type for n in proto.graph.node]
    assert "Erf" not in ops and ops.count("Gelu") >= len(CONV)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 20


def test_all_quantises_the_cnn_convolutions_within_the_target(graph, tmp_path):
    from s3prl_plugins.deploy.quantize import conv_candidates, lowest_layer_cosine, quantize_int8

    _, path = graph
    out = str(tmp_path / "all.onnx")
    report = quantize_int8(path, out, mode="all", calibration=_audio(3), min_cosine=0.9)
    assert report.mode == "all" and report.int8_convs == [f"conv_layers.{i}" for i in range(len(CONV))]
    assert not report.float_convs and report.cosine >= 0.9
    proto = onnx.load(out)
    candidates = conv_candidates(onnx.load(path))
    assert len(candidates) == len(CONV)  # the waveform CNN's, not the positional convolution
    dq = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert sum(n.input[0] in dq and n.input[1] in dq for n in convs) == len(CONV)  # QDQ around each CNN conv
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in proto.graph.node)  # and the matmuls
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["s3prl_plugins.int8_mode"] == "all" and meta["s3prl_plugins.int8_convs"].count("conv_layers") == 4
    assert float(meta["s3prl_plugins.int8_cosine"]) == pytest.approx(report.cosine, abs=1e-5)
    # on audio it was not calibrated on, the int8 states still follow float32's
    wav = _audio(1, seconds=1.7, seed=5)[0]
    assert lowest_layer_cosine([_states(out, wav)], [_states(path, wav)]) > 0.9
    onnx.checker.check_model(out, full_check=True)


def _fake_costs(monkeypatch, cost):
    """Each trial graph's "cosine": 1 - the made-up costs of the CNN convolutions it holds in int8 (read back from
    the trial's file), so the loop's choices can be checked exactly."""
    from s3prl_plugins.deploy import quantize

    def int8_convs(p):
        proto = onnx.load(p)
        dq = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        names = [n.input[1] for n in proto.graph.node if n.op_type == "Conv" and n.input[1] in dq]
        return [re.search(r"(conv_layers\.\d+)\.", w).group(1) for w in names if "conv_layers." in w]

    monkeypatch.setattr(quantize, "_run", lambda p, feeds: p)
    monkeypatch.setattr(quantize, "lowest_layer_cosine", lambda p, ref: 1.0 - sum(cost[c] for c in int8_convs(p)))


def test_convolutions_that_cost_accuracy_go_back_to_float_worst_first(graph, tmp_path, monkeypatch, caplog):
    """OpenVINO's accuracy-aware loop: each convolution's int8 alone is measured, and the worst goes back to float32
    until the target holds; an unreachable one leaves matmuls only, every convolution named with its figure."""
    from s3prl_plugins.deploy.quantize import quantize_int8

    cost = {"conv_layers.0": 0.01, "conv_layers.1": 0.02, "conv_layers.2": 0.015, "conv_layers.3": 0.005}
    _fake_costs(monkeypatch, cost)
    out = str(tmp_path / "q.onnx")
    with caplog.at_level(logging.INFO, logger="s3prl_plugins.deploy.quantize"):
        report = quantize_int8(graph[1], out, mode="all", calibration=_audio(1), min_cosine=0.999)
    assert report.mode == "matmul" and not report.int8_convs and report.cosine == 1.0
    assert report.float_convs == {k: pytest.approx(1 - v) for k, v in cost.items()}
    back = [
        r.getMessage().split(": ")[1].split(" back")[0] for r in caplog.records if "back to float32" in r.getMessage()
    ]
    assert back == ["conv_layers.1", "conv_layers.2", "conv_layers.0"]  # worst first; the last has no trial left
    assert "no CNN convolution can be int8" in caplog.text
    proto = onnx.load(out)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["s3prl_plugins.int8_mode"] == "matmul" and meta["s3prl_plugins.int8_convs"] == ""
    assert sorted(x.split(":")[0] for x in meta["s3prl_plugins.int8_float_convs"].split(",")) == sorted(cost)
    assert "DequantizeLinear" not in [n.op_type for n in proto.graph.node]  # the matmul graph, no QDQ left


def test_the_loop_stops_once_the_target_holds(graph, tmp_path, monkeypatch):
    """Partial exclusion, the path real exports take: the worst go back until the target holds, no further."""
    from s3prl_plugins.deploy.quantize import quantize_int8

    cost = {"conv_layers.0": 4e-4, "conv_layers.1": 1e-4, "conv_layers.2": 3e-4, "conv_layers.3": 2e-4}
    _fake_costs(monkeypatch, cost)
    r = quantize_int8(graph[1], str(tmp_path / "q.onnx"), mode="all", calibration=_audio(1), min_cosine=1 - 4.5e-4)
    assert r.mode == "all" and r.int8_convs == ["conv_layers.1", "conv_layers.3"]  # 0 then 2 went back: 3e-4 left
    assert r.float_convs == {"conv_layers.0": pytest.approx(1 - 4e-4), "conv_layers.2": pytest.approx(1 - 3e-4)}
    assert r.cosine == pytest.approx(1 - 3e-4)
    assert not [f for f in os.listdir(tmp_path) if f != "q.onnx"]  # the trials' graphs went with the work folder


def test_matmuls_that_already_miss_the_target_are_named(graph, tmp_path, caplog):
    from s3prl_plugins.deploy.quantize import quantize_int8

    with caplog.at_level(logging.INFO, logger="s3prl_plugins.deploy.quantize"):
        r = quantize_int8(graph[1], str(tmp_path / "q.onnx"), mode="all", calibration=_audio(1), min_cosine=1.0)
    assert r.mode == "matmul" and not r.float_convs and r.cosine < 1.0
    assert "the matmuls' int8 alone gives" in caplog.text and "alone in int8" not in caplog.text  # no conv trials


def test_auto_keeps_the_convolutions_only_where_they_measure_faster(graph, tmp_path, monkeypatch, caplog):
    from s3prl_plugins.deploy import quantize

    _, path = graph
    with caplog.at_level(logging.INFO, logger="s3prl_plugins.deploy.quantize"):
        assert quantize.quantize_int8(path, str(tmp_path / "a.onnx"), mode="auto").mode == "matmul"
    assert "--calibration" in caplog.text  # what would quantise the convolutions too
    speeds = {}
    which = lambda p: "all" if os.path.basename(p).startswith("all") else "matmul"  # noqa: E731
    monkeypatch.setattr(quantize, "_time_graph", lambda p, feeds: speeds[which(p)])
    speeds.update(matmul=1.0, all=0.9)
    r = quantize.quantize_int8(path, str(tmp_path / "b.onnx"), mode="auto", calibration=_audio(2), min_cosine=0.9)
    assert r.mode == "all" and r.seconds == {"matmul": 1.0, "all": 0.9}
    speeds.update(matmul=1.0, all=0.97)  # within the margin: not worth a graph that differs more from float32
    r = quantize.quantize_int8(path, str(tmp_path / "c.onnx"), mode="auto", calibration=_audio(2), min_cosine=0.9)
    matmul_only = quantize.quantize_int8(path, str(tmp_path / "d.onnx"), mode="matmul", calibration=_audio(2))
    assert r.mode == "matmul" and r.cosine == pytest.approx(matmul_only.cosine, abs=1e-6)  # the graph it wrote
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "c.onnx")).metadata_props}
    assert (
        meta["s3prl_plugins.int8_mode"] == "matmul"
        and meta["s3prl_plugins.int8_auto_seconds"] == "matmul:1.0000,all:0.9700"
    )


def test_all_without_calibration_audio_is_named_and_writes_nothing(graph, tmp_path):
    from s3prl_plugins.deploy.quantize import CalibrationError, quantize_int8

    with pytest.raises(CalibrationError, match="--calibration DATA_DIR"):
        quantize_int8(graph[1], str(tmp_path / "q.onnx"), mode="all")
    with pytest.raises(ExportError, match="choose one of matmul, all, auto"):
        quantize_int8(graph[1], str(tmp_path / "q.onnx"), mode="convs")
    assert os.listdir(tmp_path) == []


def test_cli_int8_modes_and_refusals(tmp_path, capsys):
    from s3prl_plugins.bin.export import main

    ckpt = str(tmp_path / "m.pt")
    save_checkpoint(ckpt, _model())
    (tmp_path / "cal").mkdir()
    for i, a in enumerate(_audio(2)):
        sf.write(str(tmp_path / "cal" / f"u{i}.wav"), a, 16000)
    assert main([ckpt, "--out", str(tmp_path / "a.onnx"), "--int8", "all"]) == 2
    assert "--calibration DATA_DIR" in capsys.readouterr().err
    assert main([ckpt, "--out", str(tmp_path / "a.onnx"), "--calibration", str(tmp_path / "cal")]) == 2
    assert "only mean something with --int8" in capsys.readouterr().err
    sf.write(str(tmp_path / "cal8k.wav"), np.zeros(8000, np.float32), 8000)
    assert main([ckpt, "--out", str(tmp_path / "a.onnx"), "--int8", "--calibration", str(tmp_path / "cal8k.wav")]) == 2
    assert "8000 Hz" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["cal", "cal8k.wav", "m.pt"]  # refused before anything was written
    args = [ckpt, "--out", str(tmp_path / "a.onnx"), "--int8", "all", "--calibration", str(tmp_path / "cal")]
    assert main(args + ["--min-cosine", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "int8 matmuls and 4 CNN convolutions" in out and "lowest layer cosine" in out
    for bad, says in (
        (["--int8", "matmul", "--min-cosine", "0.99"], "matmul quantises no convolution"),
        (["--int8", "all", "--calibration", str(tmp_path / "cal"), "--min-cosine", "1.5"], "in (0, 1]"),
        (["--min-cosine", "0.99"], "only mean something with --int8"),
    ):
        assert main([ckpt, "--out", str(tmp_path / "x.onnx"), *bad]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    assert main([ckpt, "--out", str(tmp_path / "m.onnx"), "--int8", "matmul"]) == 0
    assert "(int8 matmuls, per channel)" in capsys.readouterr().out


def test_all_on_a_graph_with_its_weights_beside_it(tmp_path, monkeypatch):
    """A graph past protobuf's limit (lowered here) keeps its weights in FILE.onnx.data through static int8 too."""
    from s3prl_plugins.deploy import graph
    from s3prl_plugins.deploy.onnx import to_onnx
    from s3prl_plugins.deploy.quantize import quantize_int8

    monkeypatch.setattr(graph, "PROTOBUF_LIMIT", 1000)
    src = to_onnx(_model(), str(tmp_path / "big.onnx"))
    out = str(tmp_path / "big.int8.onnx")
    assert quantize_int8(src, out, mode="all", calibration=_audio(2), min_cosine=0.5).mode == "all"
    assert os.path.exists(out + ".data") and not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    wav = _audio(1, seed=3)[0]
    assert _states(out, wav).shape == _states(src, wav).shape


def test_a_log_mel_model_has_no_cnn_to_quantise(tmp_path, caplog):
    from s3prl_plugins.deploy.onnx import to_onnx
    from s3prl_plugins.deploy.quantize import quantize_int8
    from s3prl_plugins.models import melhubert_config

    torch.manual_seed(0)
    cfg = melhubert_config(embed_dim=32, num_layers=1, num_heads=4, ffn_dim=32, num_clusters=None)
    src = to_onnx(build_model(cfg).eval(), str(tmp_path / "mel.onnx"))
    with caplog.at_level(logging.INFO, logger="s3prl_plugins.deploy.quantize"):
        report = quantize_int8(src, str(tmp_path / "q.onnx"), mode="all")  # no calibration needed: nothing to calibrate
    assert report.mode == "matmul" and "no waveform CNN" in caplog.text
