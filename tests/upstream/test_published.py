"""The published STaRHuBERT checkpoints (Jang, Kim and Kim, ICASSP 2024): a PyTorch Lightning ``.ckpt``
+ ``.yaml`` pair, built here in that format from s3prl's own fairseq-equivalent ``HubertModel`` with the
STaRHuBERT shape (tiny, random weights) and saved by a real Lightning ``Trainer``; loaded through
``s3prl.hub``, ``S3PRLUpstream``, ``load_pretrained``, ``bin/convert``, the profiler and the trainer,
and compared with s3prl's own HuBERT expert on the same weights. The download path runs against a
pre-filled cache and a refusing network."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from refs import randomize_, wav_batch

from s3prl_plugins.models.checkpoint import CheckpointError, read_checkpoint
from s3prl_plugins.models.convert import ConversionError
from s3prl_plugins.models.loading import OfflineError, load_pretrained

ATOL = 1e-4
CONV = "[(24, 10, 5)] + [(32, 3, 2)] * 2 + [(32, 2, 2)] * 2"
EMBED, LAYERS, HEADS, FFN = 48, 3, 4, 40  # STaRHuBERT's shape scaled down: width != CNN width -> projection
HUBERT_ID = "1Zu1idRx-sVaqMvRsUKtttzkSn4df6TUr"


def _distiller():
    """A ``distiller:`` section as the authors' yaml writes it (string literal conv spec, training keys)."""
    return {
        "extractor_mode": "default",
        "conv_feature_layers": CONV,
        "feature_grad_mult": 0.1,
        "conv_bias": False,
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "pos_conv_depth": 1,
        "max_positions": 100000,
        "layer_type": "transformer",
        "encoder_layers": LAYERS,
        "encoder_embed_dim": EMBED,
        "encoder_ffn_embed_dim": FFN,
        "encoder_attention_heads": HEADS,
        "activation_fn": "gelu",
        "layer_norm_first": False,
        "layer_grad_scale": False,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "dropout_input": 0.0,
        "final_dim": 16,
        "init_conv_layers": False,
        "init_encoder_layers": 0,
        "required_seq_len_multiple": 2,
        "crop_seq_to_multiple": 1,
        "checkpoint_activations": False,
    }


def _s3prl_student(seed=0):
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    d = _distiller()
    keys = (
        "extractor_mode",
        "conv_feature_layers",
        "conv_bias",
        "conv_pos",
        "conv_pos_groups",
        "encoder_layers",
        "encoder_embed_dim",
        "encoder_ffn_embed_dim",
        "encoder_attention_heads",
        "layer_norm_first",
        "final_dim",
    )
    model_cfg = {k: d[k] for k in keys}
    model_cfg["label_rate"] = 50
    task_cfg = {"normalize": False, "label_rate": 50}
    symbols = [[f"s{i}" for i in range(7)]]
    model = HubertModel(HubertConfig(**model_cfg), HubertPretrainingConfig(**task_cfg), symbols)
    randomize_(model, seed)
    return model, {
        "task_cfg": task_cfg,
        "model_cfg": model_cfg,
        "model_weight": model.state_dict(),
        "dictionaries_symbols": symbols,
    }


def _lightning_ckpt(path, student, teacher, save_config=True):
    """Save student+teacher the way the authors' LightningModule does (a real Trainer, zero-lr step)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    cfg = {
        "teacher": {"teacher_model": "./hubert_base_ls960.pt"},
        "train": {"batch_size": 2},
        "distiller": _distiller(),
    }

    class Distil(pl.LightningModule):
        def __init__(self, cfg):
            super().__init__()
            if save_config:
                self.save_hyperparameters()
            self.student_model = student
            self.teacher_model = teacher

        def training_step(self, batch, batch_idx):
            return (self.student_model.final_proj.weight.sum() * 0.0 + batch[0].sum() * 0.0).requires_grad_()

        def configure_optimizers(self):
            return torch.optim.SGD(self.student_model.parameters(), lr=0.0)

    module = Distil(cfg)
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=True,
        default_root_dir=str(path.parent),
    )
    trainer.fit(module, DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=2))
    trainer.save_checkpoint(str(path))
    return cfg


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(ckpt, yaml, s3prl hubert_local reference ckpt) of one tiny published-format STaRHuBERT."""
    folder = tmp_path_factory.mktemp("published")
    student, ref = _s3prl_student()
    ref_path = folder / "reference_hubert_local.pt"
    torch.save(ref, ref_path)
    # the authors' student has no mask embedding / label embeddings; it keeps a final_proj (dropped on load)
    del student.mask_emb
    del student.label_embs_concat
    teacher, _ = _s3prl_student(seed=1)
    ckpt = folder / "star_hubert.ckpt"
    cfg = _lightning_ckpt(ckpt, student, teacher, save_config=False)
    yml = folder / "2024-01-01_00h00m00s.yaml"
    yml.write_text(yaml.dump(cfg, sort_keys=False))
    return str(ckpt), str(yml), str(ref_path)


def _reference_states(ref_path, wavs):
    import importlib

    expert = importlib.import_module("s3prl.upstream.hubert.expert").UpstreamExpert(ref_path).eval()
    with torch.no_grad():
        return expert(wavs)["hidden_states"]


def _assert_close(ours, ref):
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=f"state {i}")


def test_checkpoint_is_a_real_lightning_file(published):
    ckpt, _, _ = published
    obj = read_checkpoint(ckpt)  # weights_only=True
    assert "pytorch-lightning_version" in obj and "optimizer_states" in obj
    keys = list(obj["state_dict"])
    assert any(k.startswith("teacher_model.") for k in keys)
    assert "student_model.final_proj.weight" in keys and "student_model.encoder.pos_conv.0.weight_g" in keys
    assert "student_model.mask_emb" not in keys


WAVS = [wav_batch((4000,)), wav_batch((3000, 3000), seed=1)]


def test_star_hubert_local_published_pair_equals_s3prl(published):
    import s3prl.hub as hub

    ckpt, yml, ref = published
    expert = hub.star_hubert_local(ckpt=ckpt, model_config=yml)
    layers_only = hub.star_hubert_local(ckpt=ckpt, model_config=yml, hidden_states="layers")
    for wavs in WAVS:
        ref_states = _reference_states(ref, wavs)
        with torch.no_grad():
            ours = expert(wavs)["hidden_states"]
            published_layout = layers_only(wavs)["hidden_states"]
        assert len(ours) == LAYERS + 1
        _assert_close(ours, ref_states)
        # the authors' expert returns the 12 (here 3) layer outputs, in order
        assert len(published_layout) == LAYERS
        _assert_close(published_layout, ref_states[1:])


def test_layout_option_through_the_published_yaml(published, tmp_path):
    """run_downstream passes only -k/-g: the expert options may sit at the top of the published yaml."""
    import s3prl.hub as hub

    ckpt, yml, _ = published
    doc = yaml.safe_load(open(yml))
    doc["hidden_states"] = "layers"
    g = tmp_path / "with_layout.yaml"
    g.write_text(yaml.dump(doc))
    out = hub.star_hubert_local(ckpt=ckpt, model_config=str(g))([torch.randn(4000)])
    assert len(out["hidden_states"]) == LAYERS
    with pytest.raises(ValueError, match="hidden_states"):
        hub.star_hubert_local(ckpt=ckpt, model_config=yml, hidden_states="last")


def test_s3prl_upstream_and_load_pretrained(published):
    from s3prl.nn import S3PRLUpstream

    ckpt, yml, ref = published
    wavs = WAVS[0]
    ref_states = _reference_states(ref, wavs)
    up = S3PRLUpstream("star_hubert_local", path_or_url=ckpt, extra_conf={"model_config": yml}).eval()
    with torch.no_grad():
        hs, lens = up(torch.stack(wavs), torch.tensor([w.numel() for w in wavs]))
    n = ref_states[0].shape[1]  # S3PRLUpstream pads to (samples - 1) // stride + 1 frames
    assert lens[0].tolist() == [(wavs[0].numel() - 1) // 80 + 1]
    _assert_close([h[:, :n] for h in hs], ref_states)
    model = load_pretrained(ckpt, model_config=yml)
    assert model.config.num_layers == LAYERS and model.config.embed_dim == EMBED
    with torch.no_grad():
        _assert_close(model(torch.stack(wavs)).hidden_states, ref_states)


def test_sibling_yaml_and_hyper_parameters(published, tmp_path):
    """Without model_config: a .yaml of the same name beside the .ckpt, or Lightning's saved hyper-parameters."""
    import shutil

    ckpt, yml, _ = published
    lone = tmp_path / "lone.ckpt"
    shutil.copy(ckpt, lone)
    with pytest.raises(ConversionError, match="pass the published .yaml"):
        load_pretrained(str(lone))
    shutil.copy(yml, tmp_path / "lone.yaml")
    assert load_pretrained(str(lone)).config.num_layers == LAYERS
    student, _ = _s3prl_student()
    del student.mask_emb, student.label_embs_concat
    with_hp = tmp_path / "with_hparams.ckpt"
    _lightning_ckpt(with_hp, student, _s3prl_student(seed=1)[0], save_config=True)
    assert read_checkpoint(str(with_hp))["hyper_parameters"]["cfg"]["distiller"]["encoder_layers"] == LAYERS
    model = load_pretrained(str(with_hp))
    ref = load_pretrained(ckpt, model_config=yml)
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_convert_cli_then_every_client(published, tmp_path):
    """bin/convert writes our format; it loads with no yaml through the hub, the profiler and the trainer."""
    ckpt, yml, ref = published
    out = tmp_path / "model.pt"
    r = subprocess.run(
        [sys.executable, "-m", "s3prl_plugins.bin.convert", ckpt, "--config", yml, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "3 layers, width 48" in r.stdout
    import s3prl.hub as hub

    wavs = WAVS[0]
    with torch.no_grad():
        _assert_close(hub.star_hubert_local(ckpt=str(out))(wavs)["hidden_states"], _reference_states(ref, wavs))
    # the profiler (checkpoint path) and a distillation teacher read both forms
    from s3prl_plugins.eval.probe.profile import resolve

    assert resolve(str(out)).config.embed_dim == EMBED
    from s3prl_plugins.train.distill import build_task

    task = build_task(
        {
            "teacher": {"source": ckpt, "model_config": yml},
            "student": {"source": str(out)},
            "objectives": {"layer_wise": 1.0},
        }
    )
    assert task.teacher.config.num_layers == LAYERS
    torch.testing.assert_close(
        task.student.encoder.layers[0].feed_forward.fc1.weight, task.teacher.encoder.layers[0].feed_forward.fc1.weight
    )
    bad = subprocess.run(
        [sys.executable, "-m", "s3prl_plugins.bin.convert", ckpt, "--out", str(tmp_path / "x.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    assert bad.returncode == 2 and "published .yaml" in bad.stderr and not (tmp_path / "x.pt").exists()


def test_profiler_cli_reads_the_published_pair(published):
    ckpt, yml, _ = published
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3prl_plugins.bin.profile",
            ckpt,
            "--model-config",
            yml,
            "--format",
            "json",
            "--rtf-seconds",
            "1",
            "--rtf-repeats",
            "1",
            "--no-gpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout)["params"] > 0


def test_unknown_and_foreign_keys_raise(published, tmp_path):
    ckpt, yml, _ = published
    obj = torch.load(ckpt, weights_only=True)
    obj["state_dict"]["student_model.encoder.layers.0.adapter.weight"] = torch.zeros(2)
    p = tmp_path / "unknown.ckpt"
    torch.save(obj, p)
    with pytest.raises(ConversionError, match="adapter"):
        load_pretrained(str(p), model_config=yml)
    obj = torch.load(ckpt, weights_only=True)
    obj["state_dict"]["specaug.mask"] = torch.zeros(2)
    torch.save(obj, p)
    with pytest.raises(ConversionError, match="specaug.mask"):
        load_pretrained(str(p), model_config=yml)
    obj = torch.load(ckpt, weights_only=True)
    del obj["state_dict"]["student_model.encoder.layers.1.fc2.bias"]
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match="fc2.bias"):
        load_pretrained(str(p), model_config=yml)


def test_config_of_another_architecture_refused(published, tmp_path):
    ckpt, yml, _ = published
    doc = yaml.safe_load(open(yml))
    doc["distiller"]["encoder_embed_dim"] = 64
    g = tmp_path / "wide.yaml"
    g.write_text(yaml.dump(doc))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_pretrained(ckpt, model_config=str(g))
    doc["distiller"]["encoder_embed_dim"] = EMBED
    doc["distiller"]["layer_type"] = "conformer"
    g.write_text(yaml.dump(doc))
    with pytest.raises(ConversionError, match="layer_type"):
        load_pretrained(ckpt, model_config=str(g))
    (tmp_path / "nod.yaml").write_text("train: {x: 1}\n")
    with pytest.raises(ConversionError, match="distiller"):
        load_pretrained(ckpt, model_config=str(tmp_path / "nod.yaml"))


def test_python_tuple_tag_in_yaml_is_read_without_code(published, tmp_path):
    """PyYAML's yaml.dump (the authors' writer) emits !!python/tuple for tuples; other python tags are
    never constructed."""
    from s3prl_plugins.models.convert import read_distiller_yaml

    ckpt, yml, _ = published
    text = open(yml).read() + "extra: !!python/tuple [1, 2]\nobj: !!python/object/apply:os.system ['echo pwned']\n"
    g = tmp_path / "tags.yaml"
    g.write_text(text)
    assert read_distiller_yaml(str(g))["encoder_layers"] == LAYERS
    assert load_pretrained(ckpt, model_config=str(g)).config.num_layers == LAYERS


class _Bookkeeping:  # a class only this test module knows: pickled by reference
    def __init__(self):
        self.value = 3


def test_pickled_objects_inert_or_refused_by_name(published, tmp_path, monkeypatch):
    """Lightning bookkeeping (here a pathlib path in a callback state) loads as an inert placeholder with
    weights_only=True; an unknown class is refused by name, with the explicit opt-in."""
    ckpt, yml, ref = published
    obj = torch.load(ckpt, weights_only=True)
    obj["callbacks"]["Paths"] = {"dirpath": pathlib.PosixPath("/tmp/results")}
    p = tmp_path / "paths.ckpt"
    torch.save(obj, p)
    with pytest.raises(Exception):
        torch.load(p, weights_only=True)  # torch alone refuses it
    model = load_pretrained(str(p), model_config=yml)
    assert model.config.num_layers == LAYERS

    obj["callbacks"]["Custom"] = _Bookkeeping()
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match=r"test_published\._Bookkeeping.*S3PRL_PLUGINS_INERT_GLOBALS="):
        load_pretrained(str(p), model_config=yml)
    monkeypatch.setenv("S3PRL_PLUGINS_INERT_GLOBALS", "test_published._Bookkeeping")
    got = read_checkpoint(str(p))
    assert repr(got["callbacks"]["Custom"]).startswith("<inert test_published._Bookkeeping")
    assert load_pretrained(str(p), model_config=yml).config.num_layers == LAYERS


def test_float64_waveform(published):
    """numpy's float64 reaches experts; it is converted, integer PCM is refused with the fix."""
    import numpy as np
    import s3prl.hub as hub

    ckpt, yml, _ = published
    expert = hub.star_hubert_local(ckpt=ckpt, model_config=yml)
    w = torch.from_numpy(np.random.default_rng(0).standard_normal(4000) * 0.1)
    assert w.dtype == torch.float64
    with torch.no_grad():
        a = expert([w])["hidden_states"][-1]
        b = expert([w.float()])["hidden_states"][-1]
    torch.testing.assert_close(a, b)
    from s3prl_plugins.models.ssl_model import InputError

    with pytest.raises(InputError, match="32768"):
        expert([(w * 32768).to(torch.int16)])


# ---------------------------------------------------------------------------------------------------
# s3prl.hub.star_hubert(): the download path


def _refuse_network(monkeypatch):
    """Every TCP connection is refused (DNS answers, the connect fails) and downloads are allowed."""
    monkeypatch.setenv("S3PRL_PLUGINS_OFFLINE", "0")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def getaddrinfo(host, port, *a, **k):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port or 443))]

    def connect(self, address):
        raise ConnectionRefusedError(111, "Connection refused (test)")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)


def test_star_hubert_offline_names_ids_paths_and_local_entry(tmp_path, monkeypatch):
    import s3prl.hub as hub
    import s3prl.util.download as dl

    from s3prl_plugins.upstream.published import cache_paths

    monkeypatch.setattr(dl, "_download_dir", tmp_path)
    with pytest.raises(OfflineError) as e:
        hub.star_hubert()
    msg = str(e.value)
    ckpt, yml = cache_paths("star_hubert")
    assert HUBERT_ID in msg and "1C6ZcYM4Fcxj0vurid5N02BAANj4smr8U" in msg
    assert ckpt in msg and yml in msg and "star_hubert_local" in msg
    assert ckpt.startswith(str(tmp_path))

    _refuse_network(monkeypatch)
    with pytest.raises(OfflineError, match=HUBERT_ID) as e:
        hub.star_hubert()
    assert "Connection" in str(e.value) or "connect" in str(e.value).lower()
    assert e.value.__cause__ is None and e.value.__suppress_context__  # one message, not urllib's chain under it
    assert not any(f.name.endswith(".yaml") or f.name.endswith(".ckpt") for f in (tmp_path / "star_hubert").iterdir())
    assert not list(tmp_path.rglob("*.lock")), list(tmp_path.rglob("*"))  # no 0-byte locks left in s3prl's cache


def test_star_hubert_from_a_prefilled_cache(published, tmp_path, monkeypatch):
    """A cached pair loads with the network refusing; refresh=True tries the network again (and keeps
    the cached files when it fails)."""
    import shutil

    import s3prl.hub as hub
    import s3prl.util.download as dl

    from s3prl_plugins.upstream.published import cache_paths

    ckpt, yml, ref = published
    monkeypatch.setattr(dl, "_download_dir", tmp_path)
    for entry in ("star_hubert", "star_hubert_s"):
        c, y = cache_paths(entry)
        os.makedirs(os.path.dirname(c), exist_ok=True)
        shutil.copy(ckpt, c)
        shutil.copy(yml, y)
    _refuse_network(monkeypatch)
    wavs = WAVS[0]
    with torch.no_grad():
        _assert_close(hub.star_hubert()(wavs)["hidden_states"], _reference_states(ref, wavs))
        assert len(hub.star_hubert_s(hidden_states="layers")(wavs)["hidden_states"]) == LAYERS
    with pytest.raises(OfflineError, match=HUBERT_ID):
        hub.star_hubert(refresh=True)
    assert os.path.getsize(cache_paths("star_hubert")[0]) == os.path.getsize(ckpt)


def test_download_is_checked_and_atomic(tmp_path, monkeypatch, published):
    """gdown's result is checked before it replaces anything: a Drive web page is refused, a good file
    lands under the cache name."""
    import shutil

    import gdown
    import s3prl.hub as hub
    import s3prl.util.download as dl

    from s3prl_plugins.upstream.published import PUBLISHED, cache_paths

    ckpt, yml, _ = published
    monkeypatch.setattr(dl, "_download_dir", tmp_path)
    monkeypatch.setenv("S3PRL_PLUGINS_OFFLINE", "0")
    calls = []

    def fake_download(id=None, output=None, **kw):
        calls.append(id)
        src = {PUBLISHED["star_hubert_l"].ckpt_id: ckpt, PUBLISHED["star_hubert_l"].yaml_id: yml}[id]
        shutil.copy(src, output)
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    expert = hub.star_hubert_l()
    assert len(expert([torch.randn(4000)])["hidden_states"]) == LAYERS + 1
    assert all(os.path.isfile(p) for p in cache_paths("star_hubert_l"))
    hub.star_hubert_l()  # cached: no second download
    assert len(calls) == 2

    def html_page(id=None, output=None, **kw):
        pathlib.Path(output).write_text("<!DOCTYPE html><html>Google Drive - Quota exceeded</html>")
        return output

    monkeypatch.setattr(gdown, "download", html_page)
    with pytest.raises(OfflineError, match="web page"):
        hub.star_hubert_l(refresh=True)
    assert os.path.getsize(cache_paths("star_hubert_l")[0]) == os.path.getsize(ckpt)  # the good file stays
    assert not [f for f in os.listdir(os.path.dirname(cache_paths("star_hubert_l")[0])) if ".part-" in f]


def test_star_hubert_xs_explains():
    import s3prl.hub as hub

    from s3prl_plugins.upstream.published import NotIdentifiable

    with pytest.raises(NotIdentifiable, match="not identifiable") as e:  # not a download problem
        hub.star_hubert_xs()
    assert "1sUpbDupbDtlCvN-49TblUn8GDmhV8MT8" in str(e.value)


def test_stock_run_downstream_trains_on_the_published_pair(published, tmp_path):
    """s3prl's own runner, in a fresh process, builds our entry from -k CKPT -g YAML and trains its
    ``example`` downstream (random audio, shipped in the sdist) for two steps on the CPU."""
    import s3prl

    ckpt, yml, _ = published
    config = {
        "runner": {
            "total_steps": 2,
            "gradient_clipping": 1,
            "gradient_accumulate_steps": 1,
            "log_step": 1,
            "eval_step": 1000,
            "save_step": 2,
            "max_keep": 1,
            "eval_dataloaders": ["dev"],
        },
        "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-3},
        "downstream_expert": {
            "datarc": {"train_batch_size": 2, "eval_batch_size": 2, "num_workers": 0},
            "modelrc": {"input_dim": 8},
        },
    }
    cfg = tmp_path / "example.yaml"
    cfg.write_text(yaml.dump(config))
    script = os.path.join(os.path.dirname(s3prl.__file__), "run_downstream.py")
    expdir = tmp_path / "exp"
    r = subprocess.run(
        [
            sys.executable,
            script,
            "-m",
            "train",
            "-u",
            "star_hubert_local",
            "-k",
            ckpt,
            "-g",
            yml,
            "-d",
            "example",
            "-c",
            str(cfg),
            "-p",
            str(expdir),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(script),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (expdir / "states-2.ckpt").is_file()
    state = torch.load(expdir / "states-2.ckpt", map_location="cpu", weights_only=False)
    assert state["Args"].upstream == "star_hubert_local" and state["Args"].upstream_model_config == yml
    # the runner's weighted-sum featurizer saw the 4 (= layers + 1) hidden states of the published model
    assert state["Featurizer"]["weights"].shape == (LAYERS + 1,)


def test_espnet_frontend_upstream_star_hubert_from_its_download_dir(published, tmp_path, monkeypatch):
    """ESPnet's S3prlFrontend with `upstream: star_hubert` and its `download_dir`: the published pair
    found there loads with the network refusing (ESPnet's own set_dir moves s3prl's cache)."""
    import shutil

    import s3prl.util.download as dl
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    from s3prl_plugins.upstream.published import cache_paths

    ckpt, yml, _ = published
    monkeypatch.setattr(dl, "_download_dir", dl._download_dir)  # restored after the test
    hub_dir = tmp_path / "hub"
    dl.set_dir(str(hub_dir))
    c, y = cache_paths("star_hubert")
    assert c.startswith(str(hub_dir))
    os.makedirs(os.path.dirname(c))
    shutil.copy(ckpt, c)
    shutil.copy(yml, y)
    _refuse_network(monkeypatch)
    fe = S3prlFrontend(
        fs=16000, frontend_conf={"upstream": "star_hubert"}, download_dir=str(hub_dir), multilayer_feature=True
    ).eval()
    with torch.no_grad():
        feats, lens = fe(torch.randn(2, 8000), torch.tensor([8000, 6000]))
    assert feats.shape[0] == 2 and feats.shape[-1] == EMBED and fe.output_size() == EMBED


@pytest.mark.parametrize("ffn, params", [(976, 22_308_592), (1392, 26_626_672)], ids=["STaRHuBERT", "STaRHuBERT-L"])
def test_published_shape_has_the_papers_parameter_count(ffn, params):
    """The authors' distiller section at full size (their slim CNN as a fairseq string) maps onto the
    paper's Table 2 counts (22.31 M / 26.63 M) and onto our presets' shapes."""
    from s3prl_plugins.models import build_model, count_parameters, preset_config
    from s3prl_plugins.models.convert import star_lightning_config

    d = dict(
        _distiller(),
        conv_feature_layers="[(128, 10, 5)] + [(256, 1, 1)] + [(256, 3, 2)] * 4 + [(432, 1, 1)] + [(432, 2, 2)] * 2",
        encoder_layers=12,
        encoder_embed_dim=432,
        encoder_ffn_embed_dim=ffn,
        encoder_attention_heads=12,
        conv_pos=128,
        conv_pos_groups=16,
    )
    cfg = star_lightning_config(d)
    assert count_parameters(build_model(cfg)) == params
    preset = preset_config("star_hubert" if ffn == 976 else "star_hubert_l")
    for key in (
        "conv_layers",
        "embed_dim",
        "num_heads",
        "head_dim",
        "ffn_dims",
        "pos_conv_kernel",
        "pos_conv_groups",
        "layer_norm_first",
        "feature_layer_norm",
    ):
        assert getattr(cfg, key) == getattr(preset, key), key
