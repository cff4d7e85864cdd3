"""Every CLI failure named in one line, no traceback, nothing written: a read-only/missing output folder,
a missing file in a list, a binary results file, a full disk under export, a weight-pruning schedule that
rises (refused before its first iteration)."""

import os
import subprocess
import sys

import pytest

from s3prl_plugins.models import build_model
from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.factories import hubert_config


def _cli(module, *args):
    return subprocess.run(
        [sys.executable, "-m", f"s3prl_plugins.bin.{module}", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _tiny():
    return build_model(
        hubert_config(
            num_layers=1,
            num_heads=2,
            ffn_dim=32,
            conv_layers=[(16, 10, 5), (16, 3, 2)],
            with_head=False,
            embed_dim=16,
            pos_conv_kernel=4,
            pos_conv_groups=2,
        )
    ).eval()


def test_convert_into_a_folder_it_cannot_write(tmp_path):
    src = tmp_path / "m.pt"
    save_checkpoint(str(src), _tiny())
    r = _cli("convert", src, "--out", "/proc/no/m.pt")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot write /proc/no/m.pt" in r.stderr


def test_profile_names_a_missing_file_of_its_wav_list(tmp_path):
    (tmp_path / "wav.scp").write_text(f"u1 {tmp_path}/gone.wav\n")
    r = _cli("profile", "distilhubert", "--wav-list", tmp_path / "wav.scp")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"wav.scp:1: cannot read {tmp_path}/gone.wav" in r.stderr


def test_superb_score_names_a_binary_file(tmp_path):
    (tmp_path / "r.json").write_bytes(bytes(range(256)))
    r = _cli("superb_score", tmp_path / "r.json")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{tmp_path / 'r.json'} is not JSON" in r.stderr


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("file write failed")])
def test_export_on_a_full_disk_names_the_folder(tmp_path, monkeypatch, error):
    import onnx

    from s3prl_plugins.deploy.graph_model import ExportError
    from s3prl_plugins.deploy.onnx import to_onnx

    def full(*a, **k):
        raise error

    monkeypatch.setattr(onnx, "save_model", full)
    with pytest.raises(ExportError, match=f"no space left on {tmp_path} while writing m.onnx"):
        to_onnx(_tiny(), str(tmp_path / "m.onnx"))
    assert os.listdir(tmp_path) == []


def test_a_rising_weight_pruning_schedule_is_refused_before_iteration_1():
    from s3prl_plugins.compress.steps import check_step
    from s3prl_plugins.config import ConfigError

    with pytest.raises(ConfigError, match=r"steps\.0\.densities: each density must be below the one before"):
        check_step({"method": "weight", "densities": [0.8, 0.9]}, "steps.0", lambda section, where: None)
    with pytest.raises(ConfigError, match=r"steps\.0\.stop \(0\.9\) must be below steps\.0\.start"):
        check_step({"method": "weight", "start": 0.5, "stop": 0.9}, "steps.0", lambda section, where: None)
    check_step({"method": "weight", "densities": [0.8, 0.6]}, "steps.0", lambda section, where: None)


def test_ctrl_c_in_a_compression_chain_is_one_line(monkeypatch, capsys):
    from s3prl_plugins.bin import compress

    def interrupted(path):
        raise KeyboardInterrupt("interrupted at step 7; the last checkpoint is exp/c/01_heads1/checkpoints/x.pt")

    monkeypatch.setattr(compress, "load_config", interrupted)
    assert compress.main(["--config", "c.yaml"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted at step 7" in err[0] and "a rerun keeps the finished iterations" in err[0]


def test_probe_names_a_missing_model_and_a_folder_that_is_no_phone_data_dir(tmp_path):
    """README's probe commands with a wrong path: one line that says what is missing and what writes it."""
    from tiny_data import make_tiny_data

    data, _ = make_tiny_data(str(tmp_path))
    utts = [line.split()[0] for line in open(os.path.join(data, "wav.scp"))]
    with open(os.path.join(data, "phones"), "w") as f:
        f.writelines(f"{u} AH B | K\n" for u in utts)
    (tmp_path / "phones_less").mkdir()
    (tmp_path / "phones_less" / "wav.scp").write_text("")
    cases = (
        (["--features", tmp_path / "exp" / "gone.pt", "--train", data, "--test", data], "gone.pt: no such file"),
        (
            ["--features", "fbank", "--train", tmp_path / "nowhere", "--test", data],
            "--train " + str(tmp_path / "nowhere"),
        ),
        (["--features", "fbank", "--train", data, "--test", tmp_path / "phones_less"], "no phones in it"),
    )
    for args, message in cases:
        r = _cli("probe", *args, "--out", tmp_path / "out", "--max-steps", 1)
        assert r.returncode == 2 and "Traceback" not in r.stderr and message in r.stderr, r.stderr
        assert not (tmp_path / "out").exists()


def test_superb_submission_names_a_checkpoint_that_is_not_there(tmp_path):
    r = _cli(
        "superb_submission",
        "--out",
        tmp_path / "sub",
        "--upstream",
        "star_hubert_local",
        "--ckpt",
        tmp_path / "no.pt",
        "--corpus",
        "x",
        "--ks",
        tmp_path,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no.pt: no such checkpoint file" in r.stderr, r.stderr
    assert not (tmp_path / "sub").exists()
