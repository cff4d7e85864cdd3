"""egs/librispeech/star/run.sh end to end on a fake local LibriSpeech with a tiny teacher: data,
CMUdict phones, teacher check, distillation, probe and report; and the pieces it is made of."""

import json
import os
import subprocess

import pytest
import yaml
from paths import REPO
from tiny_data import librispeech_layout as _corpus
from tiny_data import make_tiny_teacher, tiny_distill_config

from s3prl_plugins.data.kaldi import DataDir, DataDirError, combine_data_dirs, read_data_dir, write_data_dir
from s3prl_plugins.data.lexicon import write_phones
from s3prl_plugins.eval.probe.phone_ctc import read_phones

ROOT = REPO


def _dir(tmp_path, name, utts):
    d = DataDir()
    for u, text in utts.items():
        d.wav[u], d.utt2spk[u], d.text[u], d.utt2dur[u] = f"/x/{u}.flac", u.split("-")[0], text, 1.0
    write_data_dir(d, str(tmp_path / name))
    return str(tmp_path / name)


def test_cmudict_phones_and_skip_list(tmp_path):
    d = _dir(tmp_path, "d", {"1-1-0": "HELLO WORLD", "1-1-1": "HELLO XQZWV", "1-1-2": "IT'S FINE"})
    assert write_phones(d) == (2, 1)
    phones = read_phones(os.path.join(d, "phones"))
    assert phones["1-1-0"] == [["HH", "AH", "L", "OW"], ["W", "ER", "L", "D"]]
    assert "1-1-1" not in phones and "1-1-2" in phones
    assert open(os.path.join(d, "phones.skipped")).read() == "1-1-1\tXQZWV\n"


def test_combine_data_dirs(tmp_path):
    a = _dir(tmp_path, "a", {"1-1-0": "A"})
    b = _dir(tmp_path, "b", {"2-1-0": "B", "2-1-1": "C"})
    d = combine_data_dirs([a, b], check_files=False)
    assert d.utts == ["1-1-0", "2-1-0", "2-1-1"] and d.text["2-1-1"] == "C"
    with pytest.raises(DataDirError, match="in both"):
        combine_data_dirs([a, a], check_files=False)


@pytest.mark.slow
def test_librispeech_star_recipe_end_to_end(tmp_path):
    corpus = tmp_path / "LibriSpeech"
    words = ["HELLO WORLD", "THE CAT SAT", "A DOG RAN HOME", "GOOD MORNING"]
    for subset, spks in (("train-clean-100", ("19", "26")), ("dev-clean", ("84",)), ("test-clean", ("61",))):
        utts = {f"{spk}-1-{i:04d}": (1.0 + 0.1 * i, words[i % 4]) for spk in spks for i in range(3)}
        _corpus(corpus, utts, subset)
    work = tmp_path / "egs" / "librispeech"
    (work / "star" / "conf").mkdir(parents=True)
    for name in ("run.sh", "db.sh", "utils", "path.sh", "cmd.sh", "local"):
        os.symlink(os.path.join(ROOT, "egs", "librispeech", name), work / name)
    for name in ("run.sh", "ssl.sh", "db.sh", "utils", "path.sh", "cmd.sh", "local"):
        os.symlink(os.path.join(ROOT, "egs", "librispeech", "star", name), work / "star" / name)
    teacher = make_tiny_teacher(str(tmp_path / "teacher.pt"))
    cfg = tiny_distill_config("unused", "unused", teacher)
    del cfg["trainer"]["exp_dir"]
    cfg["data"].update(max_seconds=1.0, batch_seconds=4.0)
    with open(work / "star" / "conf" / "tiny.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    env = dict(os.environ, LIBRISPEECH=str(corpus), OMP_NUM_THREADS="1")
    cmd = [
        "./run.sh",
        "--teacher",
        teacher,
        "--distill-config",
        "conf/tiny.yaml",
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "--effective-batch",
        "2",
        "--probe-steps",
        "10",
        "--probe-train-utts",
        "4",
    ]
    r = subprocess.run(cmd, cwd=work / "star", env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    star = work / "star"
    assert (
        read_data_dir(str(star / "data" / "train")).utts == read_data_dir(str(star / "data" / "train_clean_100")).utts
    )
    assert os.path.isfile(star / "exp" / "tiny" / "model.pt")  # the config's name (it has no trainer.exp_dir)
    report = json.load(open(star / "exp" / "report.json"))
    assert report["teacher"]["params"] > report["tiny"]["params"] > 0
    assert 0 <= report["tiny"]["probe_per"] <= 2 and 0 <= report["teacher"]["probe_per"] <= 2
    md = (star / "exp" / "report.md").read_text()
    assert "| tiny |" in md and "| teacher |" in md and (star / "exp" / "report_losses.png").stat().st_size > 10_000
    probe = json.load(open(star / "exp" / "probe" / "tiny" / "result.json"))
    assert probe["train_utts"] == 4
    assert "job tiny done" in r.stderr and "job probe_teacher done" in r.stderr
    # finished jobs are kept: the teacher's probe serves the next student of the same teacher
    r = subprocess.run(
        cmd + ["--stage", "6", "--stop-stage", "6"], cwd=star, env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0 and "starts" not in r.stderr, r.stderr[-3000:]
    # --stage 4 with the training's stamp removed: the finished run is found and nothing is retrained
    os.remove(star / "exp" / ".done.tiny")
    r = subprocess.run(
        cmd + ["--stage", "4", "--stop-stage", "4"], cwd=star, env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resum" in (r.stdout + r.stderr).lower() and "job probe_" not in r.stderr
    # an effective batch that the GPUs x batch size cannot make stops with the reason
    r = subprocess.run(
        cmd + ["--stage", "4", "--effective-batch", "3"], cwd=star, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode != 0 and "not a multiple" in r.stderr


@pytest.mark.parametrize(
    "name, params",
    [
        ("star.yaml", 22_308_592),
        ("star_hubert_l.yaml", 26_626_672),
        ("star_hubert_9m.yaml", 8_521_264),
        ("star_wavlm.yaml", 22_308_592),
    ],
)
def test_librispeech_star_configs_build_the_students_they_name(name, params):
    """Each shipped config gives the student its comment names, with the final STaR loss, 13 states."""
    from s3prl_plugins.tasks.objectives import check_objectives
    from s3prl_plugins.train.distill import build_student

    with open(os.path.join(ROOT, "egs", "librispeech", "star", "conf", name)) as f:
        text = f.read()
    cfg = yaml.safe_load(text)
    student = build_student(cfg["student"])
    assert sum(p.numel() for p in student.parameters()) == params
    assert student.config.num_layers == 12
    assert check_objectives(cfg["objectives"])[0] == {
        k: {"weight": 1.0, "normalize": "l2", "method": "auto"} for k in ("layer_wise", "intra_layer")
    }
    assert f"{params:,}" in text or f"{params / 1e6:.2f} M" in text
    assert cfg["trainer"]["lr"] == 0.001 and cfg["trainer"]["schedule"] == "cosine"


def test_report_table_with_utterance_probes(tmp_path):
    from s3prl_plugins.bin.report import main as report_main
    from s3prl_plugins.eval.report.report import build_report, format_report

    (tmp_path / "per.json").write_text(json.dumps({"per": 0.25}))
    (tmp_path / "ks.json").write_text(json.dumps({"accuracy": 0.5}))
    report = build_report(
        {},
        {"a": str(tmp_path / "per.json")},
        {"ks": {"a": str(tmp_path / "ks.json"), "b": str(tmp_path / "none.json")}},
    )
    assert report == {"a": {"probe_per": 0.25, "ks_acc": 0.5}, "b": {"ks_acc": None}}
    table = format_report(report).splitlines()
    assert (
        "KS acc" in table[0]
        and "25.0%" in table[1]
        and "50.0%" in table[1]
        and table[2].split()[1:5] == ["-", "-", "-", "-"]
    )
    out = tmp_path / "r.json"
    assert (
        report_main(
            [
                "--probes",
                f"a={tmp_path / 'per.json'}",
                "--utt-probes",
                f"ks:a={tmp_path / 'ks.json'}",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["a"]["ks_acc"] == 0.5
    assert report_main(["--utt-probes", f"a={tmp_path / 'ks.json'}"]) == 2  # task missing
