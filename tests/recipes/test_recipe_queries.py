"""bin/inspect and bin/make_phones --mini-corpus: what recipe stages ask, as commands (no inline Python)."""

import json
import subprocess
import sys

import torch
from tiny_data import make_tiny_data

from s3prl_plugins.bin import inspect
from s3prl_plugins.models import build_model, star_hubert_config
from s3prl_plugins.models.checkpoint import save_checkpoint


def _run(capsys, *argv):
    rc = inspect.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out.strip(), out.err


def test_values_of_configs_checkpoints_and_data_dirs(tmp_path, capsys):
    conf = tmp_path / "c.yaml"
    conf.write_text("trainer: {exp_dir: exp/x, lr: 1e-4}\nteacher: {source: null}\n")
    assert _run(capsys, str(conf), "--key", "trainer.exp_dir", "--default", "exp/star")[1] == "exp/x"
    assert _run(capsys, str(conf), "--key", "trainer.lr")[1] == "0.0001"
    assert _run(capsys, str(conf), "--key", "teacher.source", "--default", "hubert_base")[1] == "hubert_base"
    assert _run(capsys, str(conf), "--key", "data.train", "--default", "d")[1] == "d"
    rc, _, err = _run(capsys, str(conf), "--key", "data.train")
    assert rc == 2 and "no value at data.train" in err
    res = tmp_path / "r.json"
    res.write_text(json.dumps({"superb": {"KS": 0.5}}))
    assert json.loads(_run(capsys, str(res), "--key", "superb")[1]) == {"KS": 0.5}
    torch.manual_seed(0)
    cfg = star_hubert_config(
        embed_dim=32,
        num_layers=1,
        num_heads=4,
        ffn_dim=8,
        conv_layers=[(16, 10, 5)],
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    save_checkpoint(str(tmp_path / "m.pt"), build_model(cfg))
    assert _run(capsys, str(tmp_path / "m.pt"), "--key", "model_config.embed_dim")[1] == "32"
    assert _run(capsys, str(tmp_path / "m.pt"), "--load")[1].endswith("1 layers")
    data, _ = make_tiny_data(str(tmp_path / "d"), n_utts=3)
    assert _run(capsys, data)[1] == f"{data} 3 utterances ok"
    assert _run(capsys, "--downstream", "ks")[1] == "speech_commands"
    rc, _, err = _run(capsys, str(tmp_path / "missing.yaml"), "--key", "a")
    assert rc == 2 and "missing.yaml" in err


def test_mfa_query_exits_with_the_status_and_says_why(monkeypatch, capsys):
    from s3prl_plugins.segment import mfa

    monkeypatch.setattr(mfa, "mfa_status", lambda: (False, "mfa is not installed"))
    rc, _, err = _run(capsys, "--mfa")
    assert rc == 1 and "not installed" in err
    monkeypatch.setattr(mfa, "mfa_status", lambda: (True, ""))
    assert _run(capsys, "--mfa")[0] == 0


def test_make_phones_writes_the_mini_corpus_reference_phones(tmp_path):

    ref = tmp_path / "corpus" / "reference"
    ref.mkdir(parents=True)
    (ref / "dev.jsonl").write_text(json.dumps({"utt": "u1", "words": [{"word": "HI", "phones": ["h", "aI"]}]}) + "\n")
    data = tmp_path / "data" / "dev"
    data.mkdir(parents=True)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3prl_plugins.bin.make_phones",
            "--dirs",
            str(data),
            "--mini-corpus",
            str(tmp_path / "corpus"),
            "--split",
            "dev",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (data / "phones").read_text() == "u1 h aI\n"
