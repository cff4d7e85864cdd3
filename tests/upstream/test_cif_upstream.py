"""Subsampled models through the real clients: `distilhubert_cif_local` in s3prl's S3PRLUpstream, its
stock run_downstream.py (fresh process) and ESPnet's S3prlFrontend -- the fixed-stride output they need
-- plus the segment-rate output for our own probes and the post-hoc pooling of the probe."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.config import SSLModelConfig
from s3prl_plugins.models.ssl_model import SSLModel


def _save(path, spec):
    torch.manual_seed(0)
    cfg = SSLModelConfig(
        conv_layers=[(16, 10, 5), (16, 8, 4), (16, 4, 4), (16, 4, 4)],
        conv_norm="layer_norm",
        feature_layer_norm=False,
        embed_dim=24,
        num_layers=2,
        num_heads=[2, 2],
        head_dim=12,
        ffn_dims=[32, 32],
        pos_conv_kernel=8,
        pos_conv_groups=4,
        subsampling=spec,
        name="distilhubert_test",
    )
    save_checkpoint(str(path), SSLModel(cfg))
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifup")
    return {
        "cif": _save(root / "cif.pt", {"type": "cif", "stride": 2}),
        "avg2": _save(root / "avg2.pt", {"type": "avg", "stride": 2}),
        "segments": _save(root / "seg.pt", {"type": "segments", "stride": 2}),
    }


def test_cif_through_s3prl_upstream_at_the_cnn_stride(ckpts):
    from s3prl.nn import Featurizer, S3PRLUpstream

    up = S3PRLUpstream("distilhubert_cif_local", path_or_url=ckpts["cif"]).eval()
    assert up.downsample_rates == [320] * 3
    with torch.no_grad():
        hs, lens = up(torch.randn(2, 16000), torch.tensor([16000, 9000]))
        feats, _ = Featurizer(up)(hs, lens)
    assert hs[-1].shape == (2, 50, 24) and lens[-1].tolist() == [50, 29]
    assert feats.shape[:2] == (2, 50)
    # the repeated segments: far fewer distinct vectors than frames
    distinct = torch.unique(hs[-1][0].round(decimals=5), dim=0).size(0)
    assert distinct < 50


def test_fixed_subsampling_declares_its_coarser_stride(ckpts):
    from s3prl.nn import S3PRLUpstream

    up = S3PRLUpstream("distilhubert_cif_local", path_or_url=ckpts["avg2"]).eval()
    assert up.downsample_rates == [640] * 3
    with torch.no_grad():
        hs, lens = up(torch.randn(2, 16000), torch.tensor([16000, 9000]))
    assert hs[-1].shape == (2, 25, 24) and lens[-1].tolist() == [25, 15]


def test_segment_rate_output_for_our_probes(ckpts, tmp_path):
    import s3prl.hub as hub

    exp = hub.distilhubert_cif_local(ckpt=ckpts["cif"], output_rate="encoder")
    out = exp([torch.randn(16000), torch.randn(8000)])
    assert "segment_lengths" in out and out["hidden_states"][-1].size(1) == int(out["segment_lengths"].max())
    g = tmp_path / "expert.yaml"
    g.write_text("output_rate: frontend\n")
    assert (
        hub.distilhubert_cif_local(ckpt=ckpts["avg2"], model_config=str(g))([torch.randn(16000)])["hidden_states"][
            0
        ].size(1)
        == 49
    )  # the CNN frames of 1 s
    with pytest.raises(ValueError, match="output_rate"):
        hub.distilhubert_cif_local(ckpt=ckpts["cif"], output_rate="segments")


def test_segments_topline_is_refused_by_the_expert_with_the_way_out(ckpts):
    import s3prl.hub as hub

    with pytest.raises(ValueError, match="--segmentation"):
        hub.distilhubert_cif_local(ckpt=ckpts["segments"])


def test_espnet_frontend_takes_the_cif_model(ckpts):
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    fe = S3prlFrontend(
        fs=16000,
        frontend_conf={"upstream": "distilhubert_cif_local", "path_or_url": ckpts["cif"]},
        multilayer_feature=True,
    ).eval()
    with torch.no_grad():
        feats, lens = fe(torch.randn(2, 16000), torch.tensor([16000, 11000]))
    assert feats.shape == (2, 50, 24) and lens.tolist() == [50, 35]


def test_stock_run_downstream_trains_on_the_cif_model(ckpts, tmp_path):
    import s3prl

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
    r = subprocess.run(
        [
            sys.executable,
            script,
            "-m",
            "train",
            "-u",
            "distilhubert_cif_local",
            "-k",
            ckpts["cif"],
            "-d",
            "example",
            "-c",
            str(cfg),
            "-p",
            str(tmp_path / "exp"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(script),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    state = torch.load(tmp_path / "exp" / "states-2.ckpt", map_location="cpu", weights_only=False)
    assert state["Featurizer"]["weights"].shape == (3,)


def test_probe_features_pool_and_the_topline_segmentation(ckpts):
    from s3prl_plugins.eval.probe.phone_ctc import FeatureExtractor

    wav = torch.randn(16000)
    plain = FeatureExtractor(ckpts["avg2"])
    assert plain(wav).shape[1] == 25 and plain.frame_shift == 0.04
    cat = FeatureExtractor(ckpts["avg2"], pool="cat:2")
    f = cat(wav)
    assert f.shape[1:] == (13, 48) and cat.frame_shift == 0.08
    assert cat.frame_rate == pytest.approx(13.0)
    with pytest.raises(ValueError, match="needs the test data's segmentation"):
        FeatureExtractor(ckpts["segments"])
    top = FeatureExtractor(ckpts["segments"], segmentation={"u": [10, 20, 49]})
    assert top(wav, "u").shape[1] == 3
    with pytest.raises(ValueError, match="utterance v has no segmentation"):
        top(wav, "v")
    with pytest.raises(ValueError, match="avg:F"):
        FeatureExtractor("fbank", pool="max:2")
