"""The ESPnet configs build their front-end from our registered upstream."""

import os

import torch
import yaml
from paths import REPO

from s3prl_plugins.models import build_model, star_hubert_config
from s3prl_plugins.models.checkpoint import save_checkpoint

ROOT = os.path.join(REPO, "espnet_recipes")


def test_asr_config_frontend_builds(tmp_path):
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    with open(os.path.join(ROOT, "librispeech_100", "asr5k", "conf", "train_asr5k.yaml")) as f:
        conf = yaml.safe_load(f)
    assert conf["frontend"] == "s3prl"
    cfg = star_hubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=48,
        conv_layers=[(16, 10, 5), (32, 3, 2)] + [(32, 2, 2)] * 5,
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    ckpt = str(tmp_path / "student.pt")
    save_checkpoint(ckpt, build_model(cfg))
    fconf = dict(conf["frontend_conf"])
    fconf["frontend_conf"] = dict(fconf["frontend_conf"], path_or_url=ckpt)
    fconf["download_dir"] = str(tmp_path / "hub")
    fe = S3prlFrontend(fs=16000, **fconf).eval()
    with torch.no_grad():
        feats, lens = fe(torch.randn(1, 16000), torch.tensor([16000]))
    assert feats.shape == (1, 50, 32) and fe.output_size() == 32


# ------------------------------------------------------------------------------ ASR-5k through ESPnet
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from s3prl_plugins.data.kaldi import read_data_dir, write_data_dir  # noqa: E402
from s3prl_plugins.data.mini_corpus import MiniCorpusConfig, espeak_available, make_mini_corpus  # noqa: E402
from s3prl_plugins.eval.superb import espnet_asr as ea  # noqa: E402

MINI_CONF = os.path.join(ROOT, "mini", "asr5k", "conf", "train_asr_mini.yaml")


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    if not espeak_available():
        pytest.skip("needs espeak-ng (installed by tools/setup_env.sh)")
    out = str(tmp_path_factory.mktemp("c") / "mini")
    make_mini_corpus(
        out, MiniCorpusConfig(utts_per_speaker=3, split_speakers={"train": 2, "dev": 1, "test": 1}), progress=False
    )
    from s3prl_plugins.bin.prepare_data import main as prep

    data = str(tmp_path_factory.mktemp("data"))
    assert prep(["--root", os.path.join(out, "LibriSpeech"), "--subsets", "train", "dev", "test", "--out", data]) == 0
    return data


@pytest.mark.slow
def test_espnet_asr_pipeline_in_fresh_espnet_processes(tiny_corpus, tmp_path):
    """dump -> BPE -> collect_stats -> asr_train -> asr_inference -> jiwer, every ESPnet stage its own process:
    the upstream name resolves in each of them only through the start-up registration."""
    cfg = star_hubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=48,
        conv_layers=[(16, 10, 5), (32, 3, 2)] + [(32, 2, 2)] * 5,
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    ckpt = str(tmp_path / "student.pt")
    save_checkpoint(ckpt, build_model(cfg))
    work = tmp_path / "asr5k"
    d = tiny_corpus
    bpe_text = tmp_path / "bpe_text"  # six training sentences miss letters the others have: train the BPE on all
    bpe_text.write_text("".join(open(f"{d}/{s}/text").read() for s in ("train", "dev", "test")))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3prl_plugins.bin.espnet_asr",
            "--config",
            MINI_CONF,
            "--upstream",
            "star_hubert_local",
            "--ckpt",
            ckpt,
            "--train",
            f"{d}/train",
            "--valid",
            f"{d}/dev",
            "--test",
            f"{d}/test",
            "--nbpe",
            "30",
            "--bpe-train-text",
            str(bpe_text),
            "--work",
            str(work),
            "--train-args",
            "--max_epoch 1 --batch_size 4",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    tokens = (work / "bpe" / "tokens.txt").read_text().split()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>" and len(tokens) == len(set(tokens))
    shape = (work / "stats" / "train" / "text_shape.bpe").read_text().split("\n")[0]
    assert shape.endswith(f",{len(tokens)}")
    conf = yaml.safe_load((work / "config.yaml").read_text())
    assert conf["preencoder_conf"]["input_size"] == 32 and conf["frontend_conf"]["frontend_conf"]["path_or_url"] == ckpt
    trained = yaml.safe_load((work / "asr" / "config.yaml").read_text())
    assert trained["frontend_conf"]["frontend_conf"]["upstream"] == "star_hubert_local" and trained["freeze_param"] == [
        "frontend.upstream"
    ]
    result = json.loads((work / "result.json").read_text())["test"]["test"]
    test_utts = read_data_dir(f"{d}/test").utts
    hyp = (work / "decode" / "test" / "1best_recog" / "text").read_text().splitlines()
    assert sorted(line.split()[0] for line in hyp) == test_utts and result["utterances"] == len(test_utts)
    assert 0 <= result["wer"] and "WER" in r.stdout
    # the scorer against a direct count on the files it scored
    import editdistance

    ref = {
        line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1].split()
        for line in (work / "dump" / "test" / "text").read_text().splitlines()
    }
    hy = {p[0]: p[1:] for p in (line.split() for line in hyp)}
    errors = sum(editdistance.eval(ref[u], hy.get(u, [])) for u in ref)
    assert result["wer"] == pytest.approx(100 * errors / sum(len(v) for v in ref.values()))


def test_espnet_asr_bad_input(tiny_corpus, tmp_path):
    d = tiny_corpus
    ea.prepare_dump(f"{d}/train", str(tmp_path / "train"))
    with pytest.raises(ea.EspnetError, match="smaller --nbpe"):
        ea.train_bpe(str(tmp_path / "train" / "text"), str(tmp_path / "bpe_big"), 5000)
    (tmp_path / "all").write_text("".join(open(f"{d}/{s}/text").read() for s in ("train", "dev", "test")))
    bpe = ea.train_bpe(str(tmp_path / "all"), str(tmp_path / "bpe"), 30)
    bad = read_data_dir(f"{d}/test")
    utt = bad.utts[1]
    bad.text[utt] += " NOË"
    write_data_dir(bad, str(tmp_path / "bad"))
    ea.prepare_dump(str(tmp_path / "bad"), str(tmp_path / "bad_dump"))
    with pytest.raises(ea.EspnetError, match=f"{utt} has characters outside the token list \\(Ë\\)"):
        ea.check_covered(str(tmp_path / "bad_dump" / "text"), bpe["bpemodel"])
    (tmp_path / "hyp").write_text(f"{utt} A B\nnot-an-utt C\n")
    with pytest.raises(ea.EspnetError, match="not-an-utt"):
        ea.score(str(tmp_path / "bad_dump" / "text"), str(tmp_path / "hyp"))
    (tmp_path / "ref").write_text("a ONE TWO THREE FOUR\nb FIVE SIX\n")
    (tmp_path / "hyp").write_text("a ONE TOO THREE\n")  # b missing: both words deleted
    s = ea.score(str(tmp_path / "ref"), str(tmp_path / "hyp"))
    assert s["wer"] == pytest.approx(100 * (1 + 1 + 2) / 6) and s["missing"] == 1
    unreg = tmp_path / "unreg.yaml"
    conf = yaml.safe_load(open(MINI_CONF))
    conf["frontend_conf"]["frontend_conf"]["upstream"] = "no_such_upstream_local"
    unreg.write_text(yaml.safe_dump(conf))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3prl_plugins.bin.espnet_asr",
            "--config",
            str(unreg),
            "--train",
            f"{d}/train",
            "--valid",
            f"{d}/dev",
            "--test",
            f"{d}/test",
            "--work",
            str(tmp_path / "w"),
            "--stop-stage",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "'no_such_upstream_local' is not an s3prl.hub entry" in r.stderr
    assert not (tmp_path / "w" / "config.yaml").exists() and not (tmp_path / "w" / "dump").exists()


def test_mini_asr5k_recipe_sequences_the_stages(tiny_corpus, tmp_path):
    """The recipe's links resolve, it names what is missing, and its first stage writes the dumps and config."""
    recipe = os.path.join(ROOT, "mini", "asr5k")
    r = subprocess.run(
        ["bash", "run.sh", "--mini", str(tmp_path / "nowhere")], cwd=recipe, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 1 and "run the mini recipe first" in r.stdout + r.stderr
    mini = tmp_path / "mini"
    os.makedirs(mini / "exp" / "star_tiny")
    os.symlink(tiny_corpus, mini / "data")
    cfg = star_hubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=48,
        conv_layers=[(16, 10, 5), (32, 3, 2)] + [(32, 2, 2)] * 5,
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    save_checkpoint(str(mini / "exp" / "star_tiny" / "model.pt"), build_model(cfg))
    work = tmp_path / "work"
    r = subprocess.run(
        ["bash", "run.sh", "--mini", str(mini), "--stop-stage", "1", "--work", str(work)],
        cwd=recipe,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert sorted(os.listdir(work / "dump")) == ["dev", "test", "train"]
    assert yaml.safe_load((work / "config.yaml").read_text())["preencoder_conf"]["input_size"] == 32


# ------------------------------------------------------------------ recipes as their --help and README write them
REPO = REPO


def _fake_tools(tmp_path):
    """python3 / dpkg / apt-get / sudo that only leave a mark: tools/setup_env.sh touching them means installing."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name in ("python3", "dpkg", "apt-get", "sudo", "pip"):
        (bin_dir / name).write_text(f"#!/bin/sh\necho {name} >> {tmp_path / 'marks'}\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("S3PRL_PLUGINS_PYTHON", "train_cmd")}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", S3PRL_PLUGINS_VENV_ROOT=str(tmp_path / "venvs"))
    return env


@pytest.mark.parametrize("recipe", ["espnet_recipes/mini/asr5k", "espnet_recipes/librispeech_100/asr5k", "egs/mini"])
def test_help_installs_nothing(tmp_path, recipe):
    """`./run.sh --help` parses options before path.sh -> tools/setup_env.sh (apt-get, a ~4 GB install)."""
    env = _fake_tools(tmp_path)
    r = subprocess.run(
        ["bash", "run.sh", "--help"],
        cwd=os.path.join(REPO, recipe),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0 and "--stage" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "marks").exists() and not (tmp_path / "venvs").exists()


def test_espnet_recipe_options_asr_config_epochs_and_training_arguments(tmp_path):
    """`--config x.yaml` is Kaldi's (it sources shell): refused by name; --asr-config, --epochs, --train-args reach
    bin/espnet_asr (train_cmd=echo prints the command the recipe runs)."""
    import shutil

    recipe = os.path.join(REPO, "espnet_recipes", "mini", "asr5k")
    py = shutil.which("python", path=os.path.dirname(sys.executable))
    env = {**os.environ, "S3PRL_PLUGINS_PYTHON": py or sys.executable, "train_cmd": "echo"}
    mini = tmp_path / "mini"
    for d in ("train", "dev", "test"):
        (mini / "data" / d).mkdir(parents=True)
        (mini / "data" / d / "text").write_text("")
    (mini / "exp" / "star_tiny").mkdir(parents=True)
    (mini / "exp" / "star_tiny" / "model.pt").write_text("")
    r = subprocess.run(
        ["bash", "run.sh", "--mini", str(mini), "--config", "conf/train_asr_mini.yaml"],
        cwd=recipe,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (
        r.returncode == 1
        and "not YAML" in r.stderr
        and "--asr-config" in r.stderr
        and "command not found" not in r.stderr
    )
    r = subprocess.run(
        [
            "bash",
            "run.sh",
            "--mini",
            str(mini),
            "--asr-config",
            "conf/other.yaml",
            "--epochs",
            "2",
            "--train-args",
            "--batch_size 4 --num_workers 0",
        ],
        cwd=recipe,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (
        "--config conf/other.yaml" in r.stdout
        and "--train-args=--max_epoch 2 --batch_size 4 --num_workers 0" in r.stdout
    )


def test_each_clone_runs_its_own_code(tmp_path):
    """The Makefile and path.sh put this clone first on PYTHONPATH; setup_env.sh never re-points the shared
    environment's editable install (it ran `pip install -e` of whichever clone ran last)."""
    printer = tmp_path / "show.mk"
    printer.write_text(f"include {REPO}/Makefile\nshow:\n\t@echo $$PYTHONPATH\n")
    r = subprocess.run(
        ["make", "-s", "-f", str(printer), "show"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": "/elsewhere", "S3PRL_PLUGINS_PYTHON": sys.executable},
    )
    assert r.stdout.strip().split(":")[0] == REPO
    script = f". {REPO}/egs/TEMPLATE/path.sh && python -c 'import s3prl_plugins, sys; print(s3prl_plugins.__file__)'"
    r = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": "", "S3PRL_PLUGINS_PYTHON": sys.executable},
    )
    assert r.returncode == 0 and r.stdout.strip().startswith(os.path.join(REPO, "s3prl_plugins")), r.stderr
    text = open(os.path.join(REPO, "tools", "setup_env.sh")).read()
    body = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert sum("pip install -q --no-deps -e" in line for line in body) == 1  # only when the environment is created
    assert "re-point" not in "\n".join(body)


def test_readme_and_configs_name_the_file_distillation_writes():
    """Distillation writes exp/star/model.pt; README and the ESPnet config named exp/star/student.pt."""
    for rel in ("README.md", "espnet_recipes/librispeech_100/asr5k/conf/train_asr5k.yaml"):
        text = open(os.path.join(REPO, rel)).read()
        assert "student.pt" not in text, rel
    conf = yaml.safe_load(open(os.path.join(REPO, "espnet_recipes/librispeech_100/asr5k/conf/train_asr5k.yaml")))
    assert conf["frontend_conf"]["frontend_conf"]["path_or_url"] == "exp/star/model.pt"
    from s3prl_plugins.train.trainer import Trainer  # noqa: F401 - the name the trainer exports under

    assert (
        'os.path.join(cfg.exp_dir, "model.pt")'
        in open(os.path.join(REPO, "s3prl_plugins", "train", "trainer.py")).read()
    )
