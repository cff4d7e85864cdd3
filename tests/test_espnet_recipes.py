"""The ESPnet configs build their front-end from our registered upstream."""

import os

import torch
import yaml

from s3prl_plugins.models import build_model, star_hubert_config
from s3prl_plugins.models.checkpoint import save_checkpoint

ROOT = os.path.join(os.path.dirname(__file__), "..", "espnet_recipes")


def test_asr_config_frontend_builds(tmp_path):
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    with open(os.path.join(ROOT, "asr", "conf", "train_asr_star_hubert.yaml")) as f:
        conf = yaml.safe_load(f)
    assert conf["frontend"] == "s3prl"
    cfg = star_hubert_config(embed_dim=32, num_layers=2, num_heads=4, ffn_dim=48, conv_layers=[(16, 10, 5), (32, 3, 2)] + [(32, 2, 2)] * 5, pos_conv_kernel=8, pos_conv_groups=4)
    ckpt = str(tmp_path / "student.pt")
    save_checkpoint(ckpt, build_model(cfg))
    fconf = dict(conf["frontend_conf"])
    fconf["frontend_conf"] = dict(fconf["frontend_conf"], path_or_url=ckpt)
    fconf["download_dir"] = str(tmp_path / "hub")
    fe = S3prlFrontend(fs=16000, **fconf).eval()
    with torch.no_grad():
        feats, lens = fe(torch.randn(1, 16000), torch.tensor([16000]))
    assert feats.shape == (1, 50, 32) and fe.output_size() == 32
