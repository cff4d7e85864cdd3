"""Deployment: ONNX export of every family (equal to torch on a padded batch of unseen lengths), int8 of the
matrix multiplications, the transformers folder, the export CLI's refusals, and s3prl's ``onnx_local``."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from paths import REPO
from tiny_data import tiny_student

from s3prl_plugins.deploy.graph_model import ExportableModel, ExportError
from s3prl_plugins.models import build_model, melhubert_config, star_hubert_config
from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.config import SSLModelConfig
from s3prl_plugins.models.factories import hubert_config
from s3prl_plugins.upstream.expert import UpstreamExpert

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CONV = [(16, 10, 5), (16, 3, 2), (16, 2, 2)]
TINY = dict(embed_dim=32, pos_conv_kernel=8, pos_conv_groups=4)


def _config(family: str) -> SSLModelConfig:
    if family == "hubert":
        return hubert_config(num_layers=2, num_heads=4, ffn_dim=64, conv_layers=CONV, with_head=False, **TINY)
    if family == "star":
        return star_hubert_config(
            num_layers=2, num_heads=4, ffn_dim=48, conv_layers=[(16, 10, 5), (32, 1, 1), (32, 4, 4)], **TINY
        )
    if family == "pruned":  # per-layer heads and FFN widths, identity and convolution heads, an emptied FFN
        return SSLModelConfig(
            conv_layers=CONV,
            num_layers=3,
            num_heads=[4, 2, 0],
            head_dim=8,
            ffn_dims=[64, 0, 16],
            identity_heads=[0, 1, 0],
            conv_heads=[0, 1, 1],
            head_conv_kernel=5,
            **TINY,
        )
    if family == "cif":
        return SSLModelConfig(
            conv_layers=CONV,
            num_layers=2,
            num_heads=[4, 4],
            head_dim=8,
            ffn_dims=[64, 64],
            feature_layer_norm=False,
            subsampling={"type": "cif", "stride": 4},
            **TINY,
        )
    if family == "avg":
        return SSLModelConfig(
            conv_layers=CONV,
            num_layers=2,
            num_heads=[4, 4],
            head_dim=8,
            ffn_dims=[64, 64],
            subsampling={"type": "avg", "stride": 3},
            **TINY,
        )
    if family == "melhubert":
        cfg = melhubert_config(num_layers=2, num_heads=4, ffn_dim=48, stack_frames=2, num_clusters=16, **TINY)
        return cfg.replace(head=None, mask_embedding=False)
    if family == "wav2vec2_large_like":  # layer-norm CNN, normalised waveform, pre-LN
        return SSLModelConfig(
            conv_layers=CONV,
            conv_norm="layer_norm",
            conv_bias=True,
            normalize_waveform=True,
            num_layers=2,
            num_heads=[4, 4],
            head_dim=8,
            ffn_dims=[64, 64],
            layer_norm_first=True,
            **TINY,
        )
    if family == "wavlm":  # gated relative position bias
        return SSLModelConfig(
            conv_layers=CONV,
            num_layers=2,
            num_heads=[4, 4],
            head_dim=8,
            ffn_dims=[64, 64],
            gated_relative_position=True,
            num_buckets=16,
            max_distance=40,
            **TINY,
        )
    raise KeyError(family)


FAMILIES = ["hubert", "star", "pruned", "conv_pruned", "cif", "avg", "melhubert", "wav2vec2_large_like", "wavlm"]


def _model(family):
    if family == "conv_pruned":  # CNN channels removed (issue 31): uneven widths, a projection gained by pruning
        from s3prl_plugins.compress import prune_conv_channels

        return prune_conv_channels(build_model(_config("star")), {0: [1, 2], 1: [0], 2: list(range(0, 32, 4))}).eval()
    model = build_model(_config(family)).eval()
    if family == "melhubert":
        model.frontend.set_stats(torch.randn(40), torch.rand(40) + 0.5)
    return model


def _batch(lengths=(5321, 3003, 1707, 913)):
    g = torch.Generator().manual_seed(1)
    wavs = [torch.randn(n, generator=g) * 0.1 for n in lengths]
    x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    return wavs, x, torch.tensor(lengths)


def _run(path, x, lengths):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["waveforms", "lengths"]
    assert [o.name for o in sess.get_outputs()] == ["hidden_states", "output_lengths"]
    states, n = sess.run(None, {"waveforms": x.numpy(), "lengths": lengths.numpy()})
    return torch.from_numpy(states), torch.from_numpy(n)


def _torch_reference(model, wavs):
    """What the s3prl expert returns for the same padded batch, and each utterance's valid frames."""
    with torch.no_grad():
        states = torch.stack(UpstreamExpert(model=model)(wavs)["hidden_states"])
        x, lengths = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), torch.tensor([w.numel() for w in wavs])
        out = model(x, lengths)
    frames = out.frontend_lengths if model.subsampler is not None and model.subsampler.variable else out.lengths
    return states, frames


def _max_relative(a, b, frames):
    """Per layer and utterance, max |a - b| over the valid frames relative to max |b|; the worst."""
    worst = 0.0
    for i, n in enumerate(frames.tolist()):
        for layer in range(b.size(0)):
            ref = b[layer, i, :n]
            worst = max(worst, float((a[layer, i, :n] - ref).abs().max() / ref.abs().max()))
    return worst


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (model, .onnx path), exported once for the module."""
    from s3prl_plugins.deploy.onnx import to_onnx

    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    out = {}
    for family in FAMILIES:
        model = _model(family)
        out[family] = (model, to_onnx(model, str(folder / f"{family}.onnx")))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_equals_torch_on_a_padded_batch_of_unseen_lengths(exported, family):
    model, path = exported[family]
    onnx.checker.check_model(onnx.load(path), full_check=True)
    wavs, x, lengths = _batch()
    states, frames = _run(path, x, lengths)
    ref, ref_frames = _torch_reference(model, wavs)
    assert frames.tolist() == ref_frames.tolist()
    assert states.shape[0] == model.config.num_layers + 1 and states.shape[1:] == ref.shape[1:]
    assert _max_relative(states, ref, frames) < 1e-4


def test_export_leaves_the_torch_model_in_eval_mode(exported):
    """torch.onnx.export restores the wrapper's mode afterwards: a wrapper left in training mode turned the
    model's dropout on for every later torch call."""
    model, _ = exported["hubert"]
    assert not any(m.training for m in model.modules())


def test_exportable_fbank_equals_torchaudio():
    from s3prl_plugins.deploy.fbank import ExportableFbank
    from s3prl_plugins.nn.frontends import LogMelFrontend

    for stack in (1, 2):
        fe = LogMelFrontend(40, stack_frames=stack)
        fe.set_stats(torch.randn(40), torch.rand(40) + 0.5)
        _, x, lengths = _batch((16000, 9001, 5230, 400))
        ref, n_ref = fe(x, lengths)
        feats, n = ExportableFbank(fe)(x, lengths)
        assert n.tolist() == n_ref.tolist()
        assert feats.shape == ref.shape
        assert float((feats - ref).abs().max()) < 1e-3  # log-Mel values up to ~50: float32 rounding of the DFT


def test_every_graph_declares_its_states_shape(exported):
    """A client reads (layers + 1, batch, frames, dim) from the graph's signature, CIF's included (its states pass
    a gather, where the trace left the layer count and the width symbolic)."""
    for family, (model, path) in exported.items():
        out = onnx.load(path).graph.output[0]
        dims = [d.dim_value or d.dim_param for d in out.type.tensor_type.shape.dim]
        assert dims == [model.config.num_layers + 1, "batch", "frames", model.config.embed_dim], family


def test_int8_quantises_only_the_layers_matmuls(exported, tmp_path):
    from s3prl_plugins.deploy.graph import weight_matmuls
    from s3prl_plugins.deploy.quantize import quantize_int8

    model, path = exported["hubert"]
    n_weights = len(weight_matmuls(onnx.load(path)))
    assert n_weights == 2 * 6  # q, k, v, out, fc1, fc2 per layer
    for per_channel in (True, False):
        out = str(tmp_path / f"q{per_channel}.onnx")
        assert quantize_int8(path, out, per_channel=per_channel).mode == "matmul"
        proto = onnx.load(out)
        ops = [n.op_type for n in proto.graph.node]
        assert "ConvInteger" not in ops and ops.count("Conv") >= len(CONV) + 1  # CNN and positional conv stay float
        assert sum(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op in ops) == n_weights
        wavs, x, lengths = _batch()
        states, frames = _run(out, x, lengths)
        ref, _ = _torch_reference(model, wavs)
        cos = torch.nn.functional.cosine_similarity(states[-1, 0, : frames[0]], ref[-1, 0, : frames[0]], dim=-1)
        assert float(cos.mean()) > 0.99


def test_int8_refused_without_matmuls(tmp_path):
    from s3prl_plugins.deploy.onnx import to_onnx
    from s3prl_plugins.deploy.quantize import quantize_int8

    cfg = SSLModelConfig(conv_layers=CONV, num_layers=1, num_heads=[0], head_dim=8, ffn_dims=[0], **TINY)
    path = to_onnx(build_model(cfg).eval(), str(tmp_path / "empty.onnx"))
    with pytest.raises(ExportError, match="no matrix multiplication"):
        quantize_int8(path, str(tmp_path / "q.onnx"))
    assert not (tmp_path / "q.onnx").exists()


def test_cif_segment_rate_refused_with_what_is_supported():
    with pytest.raises(ExportError, match="output_rate 'frontend'"):
        ExportableModel(_model("cif"), output_rate="encoder")
    seg = SSLModelConfig(
        conv_layers=CONV,
        num_layers=1,
        num_heads=[4],
        head_dim=8,
        ffn_dims=[8],
        subsampling={"type": "segments", "stride": 4},
        **TINY,
    )
    with pytest.raises(ExportError, match="segments"):
        ExportableModel(build_model(seg))


@pytest.mark.parametrize("family", ["hubert", "star", "conv_pruned", "wav2vec2_large_like"])
def test_hf_folder_loads_in_transformers_with_equal_states(tmp_path, family):
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    from s3prl_plugins.deploy.hf import to_hf

    model = _model(family)
    to_hf(model, str(tmp_path / "hf"))
    hf = HubertModel.from_pretrained(str(tmp_path / "hf")).eval()
    fe = Wav2Vec2FeatureExtractor.from_pretrained(str(tmp_path / "hf"))
    x = torch.randn(2, 4000) * 0.1
    assert fe.do_normalize == model.config.normalize_waveform
    # the model's own normalisation (F.layer_norm, eps 1e-5); the feature extractor's eps is 1e-7
    inputs = torch.nn.functional.layer_norm(x, x.shape[-1:]) if fe.do_normalize else x
    with torch.no_grad():
        ours = model(x).hidden_states
        theirs = hf(inputs, output_hidden_states=True).hidden_states
    assert len(theirs) == len(ours)
    for a, b in zip(ours, theirs):
        assert float((a - b).abs().max() / a.abs().max()) < 1e-4


@pytest.mark.parametrize(
    "family, reason",
    [
        ("pruned", "per-layer heads"),
        ("pruned", "identity"),
        ("cif", "subsampling"),
        ("melhubert", "log-Mel"),
        ("wavlm", "relative position"),
    ],
)
def test_hf_refusals_say_why(tmp_path, family, reason):
    from s3prl_plugins.deploy.hf import to_hf

    with pytest.raises(ExportError, match=reason):
        to_hf(_model(family), str(tmp_path / "hf"))
    assert not (tmp_path / "hf").exists()


def test_hf_takes_uniform_ffn_pruning_and_refuses_heads_removed_alike(tmp_path):
    """What README promises: FFN units removed alike from every layer export; heads removed alike do not
    (transformers derives the head size from width / heads, which the heads left no longer fill)."""
    from transformers import HubertModel

    from s3prl_plugins.deploy.hf import to_hf

    torch.manual_seed(0)
    ffn = build_model(hubert_config(num_layers=2, num_heads=4, ffn_dim=24, conv_layers=CONV, with_head=False, **TINY))
    to_hf(ffn.eval(), str(tmp_path / "ffn"))
    assert HubertModel.from_pretrained(str(tmp_path / "ffn")).config.intermediate_size == 24
    heads = SSLModelConfig(conv_layers=CONV, num_layers=2, num_heads=[2, 2], head_dim=8, ffn_dims=[64, 64], **TINY)
    with pytest.raises(ExportError, match=r"2 heads x 8 != width 32 \(transformers derives the head size"):
        to_hf(build_model(heads).eval(), str(tmp_path / "heads"))
    assert not (tmp_path / "heads").exists()


def _cli(*args):
    from s3prl_plugins.bin.export import main

    return main([str(a) for a in args])


def test_cli_writes_int8_and_refuses_bad_requests(tmp_path, capsys):
    ckpt = str(tmp_path / "cif.pt")
    save_checkpoint(ckpt, _model("cif"))
    assert _cli(ckpt, "--out", tmp_path / "m.int8.onnx", "--int8") == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.int8.onnx")).metadata_props}
    assert meta["s3prl_plugins.int8"] == "per_channel" and meta["s3prl_plugins.downsample_rate"] == "20"
    assert _cli(ckpt, "--out", tmp_path / "seg.onnx", "--output-rate", "encoder") == 2
    assert "output_rate 'frontend'" in capsys.readouterr().err
    assert _cli(ckpt, "--out", tmp_path / "missing" / "m.onnx") == 2
    assert "does not exist" in capsys.readouterr().err
    assert _cli(ckpt, "--out", tmp_path / "hf", "--format", "hf") == 2
    assert "subsampling" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["cif.pt", "m.int8.onnx"]  # nothing half-written


def test_onnx_local_through_s3prl_in_a_fresh_interpreter(exported):
    """s3prl's own entry points (s3prl.hub, S3PRLUpstream) run the exported graph, registered automatically."""
    model, path = exported["star"]
    wavs = _batch((16000, 9000))[0]
    ref, frames = _torch_reference(model, wavs)
    code = (
        "import sys, torch, numpy as np\n"
        "import s3prl.hub as hub\n"
        "from s3prl.nn import S3PRLUpstream\n"
        f"e = hub.onnx_local(ckpt={path!r})\n"
        "g = torch.Generator().manual_seed(1)\n"
        "wavs = [torch.randn(n, generator=g) * 0.1 for n in (16000, 9000)]\n"
        "hs = e(wavs)['hidden_states']\n"
        "up = S3PRLUpstream('onnx_local', path_or_url=" + repr(path) + ").eval()\n"
        "x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)\n"
        "with torch.no_grad(): hs2, lens = up(x, torch.tensor([16000, 9000]))\n"
        "assert up.downsample_rates == [e.get_downsample_rates('x')] * len(hs2)\n"
        "np.save(sys.argv[1], torch.stack(hs).numpy()); print((lens[-1].tolist(), len(hs2), up.downsample_rates[0]))\n"
    )
    out = os.path.splitext(path)[0] + ".npy"
    r = subprocess.run(
        [sys.executable, "-c", code, out],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lens, n_states, rate = eval(r.stdout.strip().splitlines()[-1])
    rate_ = model.downsample_rate
    assert n_states == model.config.num_layers + 1 and rate == rate_
    assert lens == [-(-n // rate_) for n in (16000, 9000)]  # s3prl's own frame count (ceil), as for every entry
    assert _max_relative(torch.from_numpy(np.load(out)), ref, frames) < 1e-4


def test_onnx_local_refuses_a_foreign_graph(tmp_path):
    from s3prl_plugins.upstream.onnx_expert import OnnxUpstreamExpert

    lin = torch.nn.Linear(4, 2)
    torch.onnx.export(lin, (torch.randn(1, 4),), str(tmp_path / "lin.onnx"), input_names=["x"], dynamo=False)
    with pytest.raises(ValueError, match="export the model with it first"):
        OnnxUpstreamExpert(ckpt=str(tmp_path / "lin.onnx"))


def test_probe_features_from_an_exported_graph(exported, tmp_path):
    """The probes take an .onnx file as --features: the same features as the checkpoint it came from."""
    from s3prl_plugins.eval.probe.phone_ctc import FeatureExtractor

    model, path = exported["melhubert"]
    ckpt = str(tmp_path / "mel.pt")
    save_checkpoint(ckpt, model)
    wav = torch.randn(7001) * 0.1
    a, b = FeatureExtractor(path), FeatureExtractor(ckpt)
    fa, fb = a(wav), b(wav)
    assert a.frame_shift == b.frame_shift == 0.02 and fa.shape == fb.shape
    assert float((fa - fb).abs().max() / fb.abs().max()) < 1e-4


def test_hf_export_refuses_a_key_transformers_does_not_have(tmp_path, monkeypatch):
    from s3prl_plugins.deploy import hf

    real = hf.hf_state
    monkeypatch.setattr(hf, "hf_state", lambda model: {**real(model), "encoder.extra.weight": torch.zeros(1)})
    with pytest.raises(ExportError, match=r"we have \['encoder.extra.weight'\] it does not"):
        hf.to_hf(_model("hubert"), str(tmp_path / "hf"))
    assert not (tmp_path / "hf").exists()


def test_the_report_has_a_row_for_an_exported_graph_beside_its_source(tmp_path):
    """bin/report (and the mini recipe's report) summarise an .onnx like a checkpoint: the same parameters and
    MACs as its source (read from the graph's metadata), onnxruntime's real-time factor and the file's size."""
    from s3prl_plugins.deploy.onnx import to_onnx
    from s3prl_plugins.deploy.quantize import quantize_int8
    from s3prl_plugins.eval.report.report import build_report

    torch.manual_seed(0)
    model = build_model(_config("star")).eval()
    ckpt = str(tmp_path / "model.pt")
    save_checkpoint(ckpt, model)
    int8 = str(tmp_path / "m.int8.onnx")
    quantize_int8(to_onnx(model, str(tmp_path / "m.onnx")), int8)
    report = build_report({"torch": ckpt, "int8": int8}, {}, rtf=True)
    src, dep = report["torch"], report["int8"]
    for key in ("params", "gmacs_per_second", "gmacs_c_per_second", "frame_rate_hz", "layers", "width"):
        assert dep[key] == src[key], key
    assert dep["rtf_cpu"] > 0 and dep["file_mb"] == pytest.approx(os.path.getsize(int8) / 1e6)
    (tmp_path / "x.onnx").write_bytes(
        onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])).SerializeToString()
    )
    with pytest.raises(ValueError, match="not a graph of bin/export"):
        build_report({"x": str(tmp_path / "x.onnx")}, {})


def test_a_graph_past_protobufs_limit_is_written_with_its_weights_beside_it(tmp_path, monkeypatch):
    """Weights near 2 GiB go to FILE.onnx.data (ONNX external data; the limit lowered here to a few bytes):
    onnxruntime, onnx_local and int8 read it from the graph's folder, and nothing else is left behind."""
    from s3prl_plugins.deploy import graph
    from s3prl_plugins.deploy.onnx import to_onnx
    from s3prl_plugins.deploy.quantize import quantize_int8
    from s3prl_plugins.upstream.onnx_expert import OnnxUpstreamExpert

    torch.manual_seed(0)
    model = build_model(_config("star")).eval()
    (tmp_path / "one").mkdir()
    one = to_onnx(model, str(tmp_path / "one" / "m.onnx"))
    monkeypatch.setattr(graph, "PROTOBUF_LIMIT", 1000)
    out = to_onnx(model, str(tmp_path / "big.onnx"))
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data", "one"]
    assert os.path.getsize(out) < os.path.getsize(out + ".data")
    feed = {"waveforms": (torch.randn(2, 16000) * 0.1).numpy(), "lengths": np.array([16000, 12000])}
    ref = ort.InferenceSession(one, providers=["CPUExecutionProvider"]).run(None, feed)
    got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, feed)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)  # the same graph, its weights read from beside it
    int8 = str(tmp_path / "big.int8.onnx")
    quantize_int8(out, int8)
    assert os.path.exists(int8 + ".data") and not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    assert len(OnnxUpstreamExpert(ckpt=int8)([torch.randn(16000) * 0.1])["hidden_states"]) == 3
    # rewritten below the limit: one file, the stale weights removed
    monkeypatch.setattr(graph, "PROTOBUF_LIMIT", 2**31)
    to_onnx(model, out)
    assert sorted(os.listdir(tmp_path)) == ["big.int8.onnx", "big.int8.onnx.data", "big.onnx", "one"]


def test_transformers_standard_padded_path_gives_our_states(tmp_path):
    """AutoFeatureExtractor(..., padding=True) then AutoModel, in a process that never imports this package:
    the folder's preprocessor asks for the attention mask, so a padded utterance's states are ours (without
    it transformers attends to the padding: 24-28 % off)."""
    import json

    from s3prl_plugins.deploy.hf import to_hf

    for family in ("hubert", "star"):
        torch.manual_seed(0)
        model = _model(family)
        folder = tmp_path / family
        to_hf(model, str(folder))
        assert json.loads((folder / "preprocessor_config.json").read_text())["return_attention_mask"] is True
        g = torch.Generator().manual_seed(1)
        wavs = [torch.randn(6400, generator=g) * 0.1, torch.randn(4100, generator=g) * 0.1]
        np.save(tmp_path / "wavs.npy", np.array([np.pad(w.numpy(), (0, 6400 - w.numel())) for w in wavs]))
        code = f"""
import sys, numpy as np, torch
from transformers import AutoFeatureExtractor, AutoModel
folder = {str(folder)!r}
x = np.load({str(tmp_path / "wavs.npy")!r})
wavs = [x[0], x[1][:4100]]
fe = AutoFeatureExtractor.from_pretrained(folder)
inputs = fe(wavs, sampling_rate=16000, padding=True, return_tensors="pt")
with torch.no_grad():
    out = AutoModel.from_pretrained(folder).eval()(**inputs, output_hidden_states=True)
np.save({str(tmp_path / "theirs.npy")!r}, torch.stack(out.hidden_states).numpy())
ours = [m for m in sys.modules if m.startswith("s3prl_plugins.") and m != "s3prl_plugins._autoload"]
assert not ours, ours  # only the start-up hook of the environment's .pth (switched off), none of our code
"""
        env = dict(os.environ, S3PRL_PLUGINS_NO_AUTOLOAD="1", PYTHONPATH="")  # not even the s3prl hook
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        theirs = torch.from_numpy(np.load(tmp_path / "theirs.npy"))
        x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        with torch.no_grad():
            out = model.eval()(x, torch.tensor([6400, 4100]))
        ours = torch.stack(out.hidden_states)
        n = int(out.lengths[1])
        for i, frames in ((0, ours.shape[2]), (1, n)):  # the valid frames of each utterance
            a, b = ours[:, i, :frames], theirs[:, i, :frames]
            assert float((a - b).abs().max() / a.abs().max()) < 1e-4, (family, i)


def test_a_model_without_transformer_layers_is_refused_by_both_hubert_shaped_exports():
    """first_k to 0 layers leaves no head count to read: both exports refuse it by name (an IndexError before)."""
    from s3prl_plugins.deploy.hf import hf_refusals
    from s3prl_plugins.models.convert.export import to_s3prl_distiller
    from s3prl_plugins.models.convert.keymap import ConversionError

    c = tiny_student(head=False).config
    model = build_model(c.replace(num_layers=0, num_heads=[], ffn_dims=[], feature_layer_norm=True))
    assert any("no transformer layers" in why for why in hf_refusals(model))
    with pytest.raises(ConversionError, match="no transformer layers"):
        to_s3prl_distiller(model)
