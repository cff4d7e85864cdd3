"""s3prl's own SUPERB runner through bin/run_downstream: the compatibility fixes one by one, then ASR, SID
and KS trained and evaluated end to end on a tiny mini corpus by the stock Runner in fresh processes."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from s3prl_plugins.data.kaldi import read_data_dir, write_data_dir
from s3prl_plugins.data.mini_corpus import MiniCorpusConfig, espeak_available, make_mini_corpus
from s3prl_plugins.data.mini_subsets import SubsetConfig, make_subsets
from s3prl_plugins.eval.superb import s3prl_runner as rn
from s3prl_plugins.eval.superb.tasks import TaskDataError, prepare
from s3prl_plugins.models import build_model, melhubert_config, star_hubert_config
from s3prl_plugins.models.checkpoint import save_checkpoint

pytestmark = pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng (installed by tools/setup_env.sh)")


# ------------------------------------------------------------------------------------------ compat, unit
def test_distributed_sampler_wrapper_splits_one_draw_between_ranks():
    weights = [0.1, 5.0, 1.0, 0.5, 2.0, 3.0, 0.2]
    ranks = []
    for r in range(3):
        s = rn.DistributedSamplerWrapper(torch.utils.data.WeightedRandomSampler(weights, 7), num_replicas=3, rank=r)
        s.set_epoch(4)
        ranks.append(list(s))
        assert len(s) == 3 == len(ranks[-1])
    g = torch.Generator()
    g.manual_seed(4)
    draw = list(torch.utils.data.WeightedRandomSampler(weights, 7, generator=g))
    draw += draw[:2]  # padded to 3 x 3 by wrapping around
    assert [draw[r::3] for r in range(3)] == ranks
    again = rn.DistributedSamplerWrapper(torch.utils.data.WeightedRandomSampler(weights, 7), num_replicas=3, rank=0)
    again.set_epoch(4)
    assert list(again) == ranks[0]
    again.set_epoch(5)
    g.manual_seed(5)
    assert list(again) == list(torch.utils.data.WeightedRandomSampler(weights, 7, generator=g))[0:7:3]


def test_catalyst_standin_only_when_the_real_package_fails(monkeypatch):
    import types

    broken = types.ModuleType("catalyst")
    broken.__path__ = []  # importing catalyst.data then fails, as the real 21.5 does on Python 3.11
    monkeypatch.setitem(sys.modules, "catalyst", broken)
    for m in ("catalyst.data", "catalyst.data.sampler"):
        monkeypatch.delitem(sys.modules, m, raising=False)
    assert rn._install_catalyst_standin() is True
    from catalyst.data.sampler import DistributedSamplerWrapper

    assert DistributedSamplerWrapper is rn.DistributedSamplerWrapper
    assert rn._install_catalyst_standin() is False  # now it imports: nothing replaced


def test_runner_checkpoints_load_once_namespace_is_allowed(tmp_path):
    path = tmp_path / "states-1.ckpt"
    torch.save({"Args": argparse.Namespace(upstream="x"), "Step": 1, "Config": {"runner": {}}}, path)
    code = (
        "import sys, torch\n"
        "try:\n    torch.load(sys.argv[1], map_location='cpu'); print('loaded')\n"
        "except Exception as e:\n    print('refused', 'Weights only load failed' in str(e))\n"
        "from s3prl_plugins.eval.superb.s3prl_runner import apply_compat; apply_compat()\n"
        "print(torch.load(sys.argv[1], map_location='cpu')['Args'].upstream)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["refused", "True", "x"], r.stderr[-2000:]


def test_device_default_and_metric_parsing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rn.runner_argv(["-m", "train"]) == ["-m", "train", "--device", "cpu"]
    assert rn.runner_argv(["-m", "train", "--device", "cuda:1"]) == ["-m", "train", "--device", "cuda:1"]
    assert rn.runner_argv(["--device=cpu"]) == ["--device=cpu"]
    text = (
        "dev-clean loss: 3.5\ndev-clean uer: 40.0\ndev-clean wer: 81.25\n[Runner] x\ntest acc: 0.75\n  noise acc: 1\n"
    )
    m = rn.parse_metrics(text)
    assert m == {"dev-clean": {"loss": 3.5, "uer": 40.0, "wer": 81.25}, "test": {"acc": 0.75}}
    assert rn.superb_metric("speech_commands", m["test"]) == {"KS": 75.0}
    assert rn.superb_metric("asr", m["dev-clean"]) == {"ASR": 81.25}
    with pytest.raises(rn.RunnerError, match="printed no 'acc'"):
        rn.superb_metric("voxceleb1", m["dev-clean"])


def test_ctc_loaders_keep_their_num_workers(monkeypatch):
    from s3prl.downstream.ctc import data, expert

    calls = []
    monkeypatch.setattr(data, "load_dataset", lambda split, tok, corpus: calls.append(corpus.pop("num_workers", 12)))
    monkeypatch.setattr(expert, "load_dataset", data.load_dataset)
    rn._keep_ctc_num_workers()
    corpus = {"num_workers": 0}
    for split in ("train", "dev", "test"):
        expert.load_dataset(split, None, corpus)
    assert calls == [0, 0, 0] and data.load_dataset is expert.load_dataset
    rn._keep_ctc_num_workers()  # idempotent: not wrapped twice
    assert getattr(data.load_dataset, "_s3prl_plugins", False)


def test_sid_cache_is_keyed_by_root_and_split_file(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("1 id10001/v/x.wav\n")
    b.write_text("1 id10001/v/y.wav\n")
    ka = rn.voxceleb_cache_dir(str(tmp_path / "exp"), "/data/vox", str(a))
    assert ka.startswith(str(tmp_path / "exp" / ".superb_cache"))
    assert ka != rn.voxceleb_cache_dir(str(tmp_path / "exp"), "/data/vox", str(b))
    assert ka != rn.voxceleb_cache_dir(str(tmp_path / "exp"), "/data/other", str(a))
    assert ka == rn.voxceleb_cache_dir(str(tmp_path / "exp"), "/data/vox", str(a))
    with pytest.raises(rn.RunnerError, match="cannot be read"):
        rn.voxceleb_cache_dir(str(tmp_path), "/x", str(tmp_path / "missing.txt"))


def test_sid_cache_is_written_atomically_and_an_unreadable_one_rebuilt(tmp_path, monkeypatch):
    """Through s3prl's own SID dataset: a run killed while writing its file lists used to leave a
    truncated pickle that every later run failed to load."""
    import pathlib
    import types

    from s3prl.downstream.voxceleb1 import dataset as vox

    root = tmp_path / "vox"
    for spk in ("id10001", "id10002"):
        (root / "dev" / "wav" / spk / "v").mkdir(parents=True)
        (root / "dev" / "wav" / spk / "v" / "x.wav").write_bytes(b"")
    meta = tmp_path / "iden_split.txt"
    meta.write_text("1 id10001/v/x.wav\n1 id10002/v/x.wav\n")
    cache = rn.voxceleb_cache_dir(str(tmp_path / "exp"), str(root), str(meta))
    monkeypatch.setattr(vox, "CACHE_PATH", vox.CACHE_PATH)
    monkeypatch.setattr(vox, "open", open, raising=False)
    # a kill in the middle of pickle.dump: nothing is left behind
    real = vox.pickle

    def dump(obj, f):
        f.write(b"\x80\x04\x95")
        raise KeyboardInterrupt

    rn.use_voxceleb_cache(vox, cache)
    monkeypatch.setattr(vox, "pickle", types.SimpleNamespace(dump=dump, load=real.load))
    with pytest.raises(KeyboardInterrupt):
        vox.SpeakerClassifiDataset("train", pathlib.Path(root), str(meta))
    assert not os.path.exists(os.path.join(cache, "train.pkl")) and os.listdir(cache) == []
    monkeypatch.setattr(vox, "pickle", real)
    # a truncated list from an older release's kill is removed and rebuilt
    with open(os.path.join(cache, "train.pkl"), "wb") as f:
        f.write(b"\x80\x04\x95")
    rn.use_voxceleb_cache(vox, cache)
    assert not os.path.exists(os.path.join(cache, "train.pkl"))
    ds = vox.SpeakerClassifiDataset("train", pathlib.Path(root), str(meta))
    assert len(ds.dataset) == 2 and ds.label == [0, 1]
    again = vox.SpeakerClassifiDataset("train", pathlib.Path(root), str(meta))  # read back from the cache
    assert again.dataset == ds.dataset


# ----------------------------------------------------------------------------------- end to end, stock
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("c") / "mini")
    make_mini_corpus(
        out, MiniCorpusConfig(utts_per_speaker=3, split_speakers={"train": 2, "dev": 1, "test": 1}), progress=False
    )
    make_subsets(out, SubsetConfig(takes=1, unknown=2, silence=1, sid_heldout=(0.34, 0.34)), progress=False)
    from s3prl_plugins.bin.prepare_data import main as prep

    data = str(tmp_path_factory.mktemp("data"))
    assert prep(["--root", os.path.join(out, "LibriSpeech"), "--subsets", "train", "dev", "test", "--out", data]) == 0
    return out, data


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory):
    d = tmp_path_factory.mktemp("up")
    torch.manual_seed(0)
    star = star_hubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=48,
        conv_layers=[(16, 10, 5), (32, 3, 2)] + [(32, 2, 2)] * 5,
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    mel = melhubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=48,
        stack_frames=2,
        pos_conv_kernel=8,
        pos_conv_groups=4,
        num_clusters=16,
    )
    paths = {"star_hubert_local": str(d / "star.pt"), "melhubert_local": str(d / "mel.pt")}
    save_checkpoint(paths["star_hubert_local"], build_model(star))
    save_checkpoint(paths["melhubert_local"], build_model(mel))
    return paths


def _run(args, cwd, timeout=400):
    r = subprocess.run(
        [sys.executable, "-m", "s3prl_plugins.bin.run_downstream", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return r


TINY = {  # a few steps of each task, small heads: the stock code path, not SUPERB's budget
    "asr": "config.runner.total_steps=6,,config.downstream_expert.modelrc.project_dim=16,,"
    "config.downstream_expert.modelrc.RNNs.dim=[16],,config.downstream_expert.modelrc.RNNs.dropout=[0.0],,"
    "config.downstream_expert.modelrc.RNNs.layer_norm=[False],,config.downstream_expert.modelrc.RNNs.proj=[False],,"
    "config.downstream_expert.modelrc.RNNs.sample_rate=[1],,config.downstream_expert.datarc.batch_size=4",
    "sid": "config.runner.total_steps=6,,config.runner.gradient_accumulate_steps=2,,"
    "config.downstream_expert.datarc.train_batch_size=4",
    "ks": "config.runner.total_steps=6,,config.downstream_expert.datarc.batch_size=8",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, downstream, upstream, split, key",
    [
        ("ks", "speech_commands", "star_hubert_local", "test", "KS"),
        ("sid", "voxceleb1", "melhubert_local", "test", "SID"),
        ("asr", "asr", "star_hubert_local", "test-clean", "ASR"),
    ],
)
def test_stock_runner_trains_and_evaluates_each_task(
    corpus, upstreams, tmp_path, task, downstream, upstream, split, key
):
    out, data = corpus
    if task == "ks":
        config = prepare(
            "ks", str(tmp_path / "task"), speech_commands=os.path.join(out, "subsets"), steps=6, num_workers=0
        )
    else:
        sub = os.path.join(out, "subsets", "data") if task == "sid" else data
        pre = "sid_" if task == "sid" else ""
        config = prepare(
            task,
            str(tmp_path / "task"),
            train=os.path.join(sub, pre + "train"),
            dev=os.path.join(sub, pre + "dev"),
            test=os.path.join(sub, pre + "test"),
            steps=6,
            num_workers=0,
        )
    cfg = yaml.safe_load(open(config))
    assert cfg["optimizer"]["lr"] == 1.0e-4 and cfg["runner"]["gradient_accumulate_steps"] == (
        4 if task == "sid" else 1
    )
    exp = str(tmp_path / "exp")
    import s3prl.downstream.voxceleb1.dataset as vox

    package_cache = os.path.join(os.path.dirname(vox.__file__), ".cache")
    before = sorted(os.listdir(package_cache)) if os.path.isdir(package_cache) else None
    # -k relative to where training runs, as README writes it (exp/star_tiny/model.pt)
    k = os.path.relpath(upstreams[upstream], tmp_path)
    r = _run(
        ["-m", "train", "-u", upstream, "-k", k, "-d", downstream, "-c", config, "-p", exp, "-o", TINY[task]], tmp_path
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert os.path.isfile(os.path.join(exp, "states-6.ckpt"))
    stored = json.load(open(os.path.join(exp, rn.RUN_FILE)))
    assert (
        stored["upstream_ckpt"] == upstreams[upstream]
        and stored["s3prl_root"] is None
        and stored["downstream"] == downstream
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a fresh process, no --device, from another directory: the upstream path was stored absolute
    r = _run(["-m", "evaluate", "-t", split, "-e", os.path.join(exp, "states-6.ckpt")], elsewhere)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.load(open(os.path.join(exp, f"superb_{split}.json")))
    assert result["downstream"] == downstream and result["upstream"] == upstream and set(result["superb"]) == {key}
    value = result["superb"][key]
    assert 0.0 <= value <= 100.0
    printed = result["printed"]["wer" if task == "asr" else "acc"]
    assert value == pytest.approx(printed * (1 if task == "asr" else 100))
    if task == "sid":  # the file lists were cached in the experiment, not inside the installed package
        assert sorted(
            os.listdir(os.path.join(exp, ".superb_cache", os.listdir(os.path.join(exp, ".superb_cache"))[0]))
        ) == ["dev.pkl", "test.pkl", "train.pkl"]
        assert (sorted(os.listdir(package_cache)) if os.path.isdir(package_cache) else None) == before
    if task == "ks":
        # the leaderboard bundle from the stock runner's own test predictions, with the form's fields profiled
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "s3prl_plugins.bin.superb_submission",
                "--out",
                str(tmp_path / "sub"),
                "--upstream",
                upstream,
                "--ckpt",
                upstreams[upstream],
                "--corpus",
                "tiny",
                "--ks",
                exp,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert r.returncode == 0, r.stderr[-2000:]
        import zipfile

        assert zipfile.ZipFile(tmp_path / "sub" / "predict.zip").namelist() == ["predict/ks_public/predict.txt"]
        card = json.load(open(tmp_path / "sub" / "model.json"))
        assert card["stride_samples"] == 320 and card["params"] > 0 and card["macs_superb"] > 0
        assert json.load(open(tmp_path / "sub" / "results.json")) == {"KS": value}
        # bad input: an explicit upstream that is not the checkpoint's, and a checkpoint that is not there
        r = _run(["-m", "evaluate", "-u", "melhubert_local", "-e", os.path.join(exp, "states-6.ckpt")], tmp_path)
        assert r.returncode == 2 and "was trained with -u star_hubert_local, not melhubert_local" in r.stderr
        r = _run(["-m", "evaluate", "-e", os.path.join(exp, "states-99.ckpt")], tmp_path)
        assert r.returncode == 2 and "no such checkpoint" in r.stderr
    if task == "asr":
        r = _run(["-m", "evaluate", "-t", "test", "-e", os.path.join(exp, "states-6.ckpt")], tmp_path)
        assert r.returncode == 2 and "-t test-clean" in r.stderr


def test_task_preparation_refuses_bad_corpora(corpus, tmp_path):
    out, data = corpus
    bad = read_data_dir(os.path.join(data, "dev"))
    utt = bad.utts[0]
    bad.text[utt] = bad.text[utt] + " naïve"
    write_data_dir(bad, str(tmp_path / "dev"))
    with pytest.raises(TaskDataError, match=f"{utt} has characters the training text never has: Ï"):
        prepare(
            "asr",
            str(tmp_path / "asr"),
            train=os.path.join(data, "train"),
            dev=str(tmp_path / "dev"),
            test=os.path.join(data, "test"),
        )
    assert not os.path.exists(tmp_path / "asr") and not os.path.exists(str(tmp_path / "asr") + ".tmp")
    with pytest.raises(TaskDataError, match="not a training speaker"):
        prepare(
            "sid",
            str(tmp_path / "sid"),
            train=os.path.join(data, "train"),
            dev=os.path.join(data, "dev"),
            test=os.path.join(data, "test"),
        )
    # one utterance in two splits: named with both data dirs, before anything is linked
    write_data_dir(read_data_dir(os.path.join(data, "train")), str(tmp_path / "dup_dev"))
    first = read_data_dir(os.path.join(data, "train")).utts[0]
    with pytest.raises(TaskDataError, match=f"{first} is in {os.path.join(data, 'train')} and in .*dup_dev"):
        prepare(
            "sid",
            str(tmp_path / "sid"),
            train=os.path.join(data, "train"),
            dev=str(tmp_path / "dup_dev"),
            test=os.path.join(data, "test"),
        )
    assert not os.path.exists(tmp_path / "sid")
    with pytest.raises(TaskDataError, match="_background_noise_"):
        prepare("ks", str(tmp_path / "ks"), speech_commands=data)
    # PR: phones that do not match the transcript, and words the lexicon lacks
    good = read_data_dir(os.path.join(data, "train"))
    for name, phones in (
        ("mismatch", lambda u, w: " | ".join(["a"] * (len(w) + 1))),
        ("fine", lambda u, w: " | ".join(["a b"] * len(w))),
    ):
        write_data_dir(good, str(tmp_path / name))
        with open(tmp_path / name / "phones", "w") as f:
            f.writelines(f"{u} {phones(u, good.text[u].split())}\n" for u in good.utts)
    with pytest.raises(TaskDataError, match="phone groups for .* words of its transcript"):
        prepare(
            "pr",
            str(tmp_path / "pr"),
            train=str(tmp_path / "mismatch"),
            dev=os.path.join(data, "dev"),
            test=os.path.join(data, "test"),
        )
    (tmp_path / "lex.txt").write_text("HELLO h @ l oU\n")
    with pytest.raises(TaskDataError, match="words without a pronunciation"):
        prepare(
            "pr",
            str(tmp_path / "pr"),
            train=str(tmp_path / "fine"),
            dev=os.path.join(data, "dev"),
            test=os.path.join(data, "test"),
            lexicon=str(tmp_path / "lex.txt"),
        )
    assert not os.path.exists(tmp_path / "pr")
    # a corpus that fits: s3prl's linear warm-up schedule is on (5% of the steps)
    fine = {}
    for role in ("dev", "test"):
        d = read_data_dir(os.path.join(data, role))
        write_data_dir(d, str(tmp_path / f"fine_{role}"))
        with open(tmp_path / f"fine_{role}" / "phones", "w") as f:
            f.writelines(f"{u} {' | '.join(['a b'] * len(d.text[u].split()))}\n" for u in d.utts)
        fine[role] = str(tmp_path / f"fine_{role}")
    config = prepare("pr", str(tmp_path / "pr"), steps=400, train=str(tmp_path / "fine"), **fine)
    with open(config) as f:
        assert yaml.safe_load(f)["scheduler"] == {"name": "linear_schedule_with_warmup", "num_warmup_steps": 20}


def test_pr_without_a_checkout_is_refused_up_front(tmp_path):
    """`-d ctc` with PyPI's s3prl: a message with the fix, not ModuleNotFoundError at the first batch."""
    env = {k: v for k, v in os.environ.items() if k != "S3PRL_ROOT"}
    (tmp_path / "config.yaml").write_text("runner: {total_steps: 6}\n")
    cmd = [
        sys.executable,
        "-m",
        "s3prl_plugins.bin.run_downstream",
        "-m",
        "train",
        "-u",
        "star_hubert_local",
        "-k",
        "x.pt",
        "-d",
        "ctc",
        "-c",
        "config.yaml",
        "-p",
        "exp/pr",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "only a git checkout has it" in r.stderr and "--s3prl-root" in r.stderr and "S3PRL_ROOT" in r.stderr
    assert not (tmp_path / "exp").exists()
    fake = tmp_path / "not_a_checkout"
    (fake / "s3prl").mkdir(parents=True)
    r = subprocess.run(
        cmd, capture_output=True, text=True, cwd=tmp_path, env={**env, "S3PRL_ROOT": str(fake)}, timeout=120
    )
    assert r.returncode == 2 and f"which {fake} (from S3PRL_ROOT) does not have" in r.stderr, r.stderr[-2000:]


def test_the_s3prl_root_comes_from_the_flag_the_environment_or_the_experiment(tmp_path, monkeypatch):
    checkout = tmp_path / "s3prl_git"
    (checkout / "s3prl" / "downstream" / "ctc" / "corpus").mkdir(parents=True)
    (checkout / "s3prl" / "downstream" / "ctc" / "corpus" / "libriphone.py").write_text("")
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / rn.RUN_FILE).write_text(json.dumps({"s3prl_root": str(checkout), "downstream": "ctc"}))
    monkeypatch.delenv("S3PRL_ROOT", raising=False)
    assert rn.resolve_s3prl_root(None, str(exp / "dev-best.ckpt")) == (str(checkout), str(exp / rn.RUN_FILE))
    assert rn._downstream_of(["-e", str(exp / "dev-best.ckpt")], str(exp / "dev-best.ckpt")) == "ctc"
    rn.check_checkout("ctc", str(checkout), "x")  # the checkout has the corpus code
    assert rn.resolve_s3prl_root("/given", str(exp)) == ("/given", "--s3prl-root")
    monkeypatch.setenv("S3PRL_ROOT", "/from/env")
    assert rn.resolve_s3prl_root(None, str(exp)) == ("/from/env", "S3PRL_ROOT")
    monkeypatch.delenv("S3PRL_ROOT")
    (exp / rn.RUN_FILE).write_text(json.dumps({"s3prl_root": str(tmp_path / "moved"), "downstream": "ctc"}))
    with pytest.raises(rn.RunnerError, match="which is gone"):
        rn.resolve_s3prl_root(None, str(exp))
    assert rn.resolve_s3prl_root(None, None) == (None, "")
    rn.check_checkout("speech_commands", None, "")  # the other tasks run from the package


def test_upstream_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "model.pt").write_text("")
    argv = rn.absolute_upstream_ckpt(["-u", "star_hubert_local", "-k", "exp/model.pt", "-d", "asr"])
    assert argv[3] == str(tmp_path / "exp" / "model.pt")
    assert rn.absolute_upstream_ckpt(["--upstream_ckpt=exp/model.pt"]) == [
        f"--upstream_ckpt={tmp_path / 'exp' / 'model.pt'}"
    ]
    assert rn.absolute_upstream_ckpt(["-k", "https://host/m.pt"]) == ["-k", "https://host/m.pt"]  # not a path: as given
    (tmp_path / "m.yaml").write_text("")
    assert rn.absolute_upstream_ckpt(["-g", "m.yaml"]) == ["-g", str(tmp_path / "m.yaml")]
    from s3prl_plugins.models.checkpoint import CheckpointError, read_checkpoint

    with pytest.raises(CheckpointError, match=f"looked for {tmp_path / 'exp' / 'gone.pt'}"):
        read_checkpoint("exp/gone.pt")


def test_asr_evaluate_checks_the_split_and_the_best_checkpoint_before_loading(tmp_path):
    """README's ASR evaluate: `-t test-clean -e .../dev-clean-best.ckpt`; a wrong split or a best checkpoint that was
    never written is named before s3prl and the upstream load."""
    exp = tmp_path / "asr"
    exp.mkdir()
    datarc = {"train": ["train"], "dev-clean": ["dev"], "test-clean": ["test"]}
    torch.save(
        {
            "Args": argparse.Namespace(downstream="asr", upstream="star_hubert_local"),
            "Config": {"downstream_expert": {"datarc": datarc}},
        },
        exp / "states-6.ckpt",
    )
    r = _run(["-m", "evaluate", "-e", str(exp / "states-6.ckpt")], tmp_path, timeout=120)
    assert r.returncode == 2 and "-t test: the asr config has no such split" in r.stderr and "-t test-clean" in r.stderr
    assert "s3prl 0.4" not in r.stderr  # refused before s3prl was imported
    r = _run(["-m", "evaluate", "-t", "test-clean", "-e", str(exp / "dev-clean-best.ckpt")], tmp_path, timeout=120)
    assert (
        r.returncode == 2 and "only once a dev WER below 100" in r.stderr and "The folder has states-6.ckpt" in r.stderr
    )


def test_a_missing_best_checkpoint_of_a_run_that_never_evaluated_says_so(tmp_path):
    """`-o config.runner.total_steps=2000` on a KS config keeps eval_step 5000: the run never evaluates on dev
    and writes no dev-best.ckpt; the refusal says that, and what to evaluate or prepare instead."""
    exp = tmp_path / "ks"
    exp.mkdir()
    (exp / "states-2000.ckpt").write_bytes(b"")
    (exp / "config_2026-12-08-00-00-00.yaml").write_text(
        yaml.safe_dump({"runner": {"total_steps": 2000, "eval_step": 5000, "save_step": 1000}})
    )
    with pytest.raises(rn.RunnerError) as e:
        rn.run(["-m", "evaluate", "-e", str(exp / "dev-best.ckpt")])
    message = str(e.value)
    assert "never evaluated on dev: its runner.eval_step (5000) is above its total_steps (2000)" in message
    assert "states-2000.ckpt" in message and "superb_prepare --steps 2000" in message
    (exp / "config_2026-12-08-00-00-00.yaml").write_text(
        yaml.safe_dump({"runner": {"total_steps": 2000, "eval_step": 500}})
    )
    with pytest.raises(rn.RunnerError) as e:
        rn.run(["-m", "evaluate", "-e", str(exp / "dev-best.ckpt")])
    assert "never evaluated" not in str(e.value)  # it did evaluate: the dev metric never improved


def test_superb_prepare_pr_prints_the_next_command_with_the_root(tmp_path, monkeypatch, capsys):
    from s3prl_plugins.bin import superb_prepare

    calls = {}
    monkeypatch.setattr(
        superb_prepare, "prepare", lambda task, out, **kw: calls.setdefault("c", os.path.join(out, "config.yaml"))
    )
    monkeypatch.setenv("S3PRL_ROOT", "/opt/s3prl")
    assert superb_prepare.main(["pr", "--train", "a", "--dev", "b", "--test", "c", "--out", "superb/pr"]) == 0
    out = capsys.readouterr().out
    assert "run_downstream --s3prl-root /opt/s3prl -m train" in out and "-d ctc -c superb/pr/config.yaml" in out
    monkeypatch.delenv("S3PRL_ROOT")
    assert superb_prepare.main(["pr", "--train", "a", "--dev", "b", "--test", "c", "--out", "superb/pr"]) == 0
    assert "--s3prl-root S3PRL_CHECKOUT" in capsys.readouterr().out


@pytest.mark.skipif(
    not os.environ.get("S3PRL_ROOT"), reason="PR runs from an s3prl git checkout: set S3PRL_ROOT=/path/to/s3prl"
)
def test_pr_through_an_s3prl_checkout(corpus, upstreams, tmp_path):
    """SUPERB PR: s3prl's ctc downstream with the checkout's libriphone corpus, our lexicon and phone set."""
    out, data = corpus
    d = {s: os.path.join(data, s) for s in ("train", "dev", "test")}
    from s3prl_plugins.bin.make_phones import main as phones  # the mini recipe's phones: the corpus's espeak lexicon

    assert phones(["--dirs", *d.values(), "--lexicon", os.path.join(out, "lexicon.txt")]) == 0
    config = prepare("pr", str(tmp_path / "task"), steps=6, num_workers=0, **d)
    exp = str(tmp_path / "exp")
    root = os.environ["S3PRL_ROOT"]
    r = _run(
        [
            "--s3prl-root",
            root,
            "-m",
            "train",
            "-u",
            "star_hubert_local",
            "-k",
            upstreams["star_hubert_local"],
            "-d",
            "ctc",
            "-c",
            config,
            "-p",
            exp,
            "-o",
            "config.runner.total_steps=6",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "12 worker" not in r.stderr
    r = _run(["--s3prl-root", root, "-m", "evaluate", "-e", os.path.join(exp, "states-6.ckpt")], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 0 <= json.load(open(os.path.join(exp, "superb_test.json")))["superb"]["PR"] <= 100


def test_the_superb_probe_is_the_stock_pr_head():
    """The in-process probe that mirrors s3prl's ctc head (no layer norm, 256-d projection, linear decay)."""
    from s3prl_plugins.eval.probe.phone_ctc import PROBES, PhoneCTC

    cfg = PROBES["superb"]
    assert (cfg["lr"], cfg["project_dim"], cfg["layer_norm"], cfg["schedule"], cfg["clip_norm"], cfg["reduction"]) == (
        1e-2,
        256,
        False,
        "linear",
        1.0,
        "mean",
    )
    assert (cfg["betas"], cfg["eps"], cfg["batch_utts"], cfg["grad_accum"], cfg["eos"]) == (
        (0.9, 0.999),
        1e-8,
        16,
        2,
        True,
    )
    m = PhoneCTC(32, 10, num_layers_in=3, dilations=(), layer_norm=False, project_dim=256)
    assert not any(isinstance(x, torch.nn.LayerNorm) for x in m.modules())
    assert [tuple(p.shape) for p in m.out.parameters()] == [(256, 32), (256,), (10, 256), (10,)]
    out = m(torch.randn(2, 3, 7, 32), torch.tensor([7, 5]))
    assert out.shape == (2, 7, 10)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 7))


def test_ctc_mean_reduction_is_torchs_per_utterance_mean():
    import torch.nn.functional as F

    from s3prl_plugins.eval.probe.phone_ctc import CTCTask, PhoneCTC

    torch.manual_seed(0)
    m = PhoneCTC(8, 5, num_layers_in=1, dilations=())
    batch = {
        "feats": torch.randn(2, 1, 9, 8),
        "lengths": torch.tensor([9, 6]),
        "targets": torch.tensor([1, 2, 3, 1, 4]),
        "target_lengths": torch.tensor([3, 2]),
    }
    loss, logs = CTCTask(m, "mean")(batch)
    lp = m(batch["feats"], batch["lengths"])
    per = [
        F.ctc_loss(
            lp[i : i + 1, : int(batch["lengths"][i])].transpose(0, 1),
            t,
            batch["lengths"][i : i + 1],
            batch["target_lengths"][i : i + 1],
            reduction="sum",
        )
        / int(batch["target_lengths"][i])
        for i, t in enumerate((torch.tensor([1, 2, 3]), torch.tensor([1, 4])))
    ]
    torch.testing.assert_close(loss, (per[0] + per[1]) / 2)


def test_an_eos_class_is_dropped_from_hypotheses_and_references():
    """s3prl's PR targets end in <eos>: the probe that mirrors it emits one, which is not a phone."""
    from s3prl_plugins.eval.probe.phone_ctc import FeatureDataset, greedy_decode, phone_error_rate

    eos = 3
    lp = torch.full((6, 4), -10.0)
    for t, c in enumerate([1, 0, 2, 2, 3, 0]):
        lp[t, c] = 0.0
    assert greedy_decode(lp, 6) == [1, 2, 3]
    assert greedy_decode(lp, 6, drop=[eos]) == [1, 2]

    class Fixed(torch.nn.Module):
        def forward(self, feats, lengths):
            return lp[None]

    ds = FeatureDataset({"u": torch.zeros(1, 6, 2)}, {"u": [1, 2, eos]})
    assert phone_error_rate(Fixed(), ds, drop=[eos]) == 0.0
    assert phone_error_rate(
        Fixed(), FeatureDataset({"u": torch.zeros(1, 6, 2)}, {"u": [1, 2, 2, eos]}), drop=[eos]
    ) == pytest.approx(1 / 3)


def test_probe_batches_of_a_fixed_number_of_similar_length_utterances(tmp_path):
    """batch_utts: s3prl's bucketing (16 utterances of similar length), with gradient accumulation."""
    from s3prl_plugins.data.dataset import BucketBatchSampler
    from s3prl_plugins.eval.probe.phone_ctc import train_phone_ctc

    durs = [float(d) for d in torch.randint(50, 400, (37,)).tolist()]
    batches = list(BucketBatchSampler(durs, float("inf"), seed=0, max_batch_size=16))
    assert sorted(len(b) for b in batches) == [5, 16, 16]
    assert sorted(i for b in batches for i in b) == list(range(37))
    order = sorted(range(37), key=lambda i: durs[i])
    assert all(sorted(b, key=lambda i: durs[i]) in (order[:16], order[16:32], order[32:]) for b in batches)
    torch.manual_seed(0)
    feats = {f"u{i}": torch.randn(2, 12, 4) for i in range(8)}
    targets = {u: [1, 2, 3] for u in feats}
    m = train_phone_ctc(
        (feats, targets),
        None,
        4,
        str(tmp_path / "m"),
        max_steps=3,
        dilations=(),
        batch_utts=3,
        grad_accum=2,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    assert m(feats["u0"][None], torch.tensor([12])).shape == (1, 12, 4)
    state = torch.load(str(tmp_path / "m" / "checkpoints" / "step00000003.pt"), map_location="cpu", weights_only=True)
    assert state["config"]["grad_accum"] == 2 and tuple(state["config"]["betas"]) == (0.9, 0.999)
