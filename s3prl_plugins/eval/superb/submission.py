"""The SUPERB leaderboard's public-set upload: ``predict/<task>_public/...`` zipped as ``predict.zip``.

The leaderboard scores the test-set predictions that each s3prl downstream's ``-m evaluate`` writes
into its experiment folder; the file each task's entry takes (s3prl's submission layout):

==========  ===========================  =================================================
task        from the experiment folder    in the bundle
==========  ===========================  =================================================
pr          ``test-hyp.ark``              ``predict/pr_public/predict.ark``
asr         ``test-clean-noLM-hyp.ark``   ``predict/asr_public/predict.ark``
asr_lm      ``test-clean-LM-hyp.ark``     ``predict/asr_lm_public/predict.ark``
ks          ``test_predict.txt``          ``predict/ks_public/predict.txt``
sid         ``test_predict.txt``          ``predict/sid_public/predict.txt``
ic          ``test_predict.csv``          ``predict/ic_public/predict.csv``
er_foldN    ``test_foldN_predict.txt``    ``predict/er_foldN_public/predict.txt`` (N = 1..5)
qbe         ``benchmark.stdlist.xml``     ``predict/qbe_public/benchmark.stdlist.xml``
sf          ``test-hyp.ark``              ``predict/sf_public/predict.ark``
sv          ``test_predict.txt``          ``predict/sv_public/predict.txt``
sd          ``scoring/predictions/``      ``predict/sd_public/scoring/predictions/`` (+ ``frame_shift``)
==========  ===========================  =================================================

:func:`build_submission` checks every prediction file (present, non-empty, one ``<utterance> <prediction>``
per line for the ``.ark``/``.txt`` kinds, no utterance twice), copies them, writes ``README.md`` with what
the submission form asks -- parameters, MACs by the SUPERB@SLT protocol (our profiler: 32 utterances,
224.86 s, 1-20 s each; also per second of speech), the upstream's stride, the input format, the
pre-training corpus (given, or counted by :func:`corpus_from_training` from the training config's data
dirs; never a default) -- plus ``results.json`` (the SUPERB metrics that ``-m evaluate`` measured, for
``bin/superb_score``) and ``model.json``, then zips ``predict/`` with :mod:`zipfile`. Everything is built
in ``<out>.tmp`` and renamed at the end.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
import shutil
import zipfile
from typing import Dict, List, Optional

from s3prl_plugins.data.kaldi import atomic_dir

#: task -> (bundle folder, source file in the experiment, target name)
FILES = {
    "pr": ("pr_public", "test-hyp.ark", "predict.ark"),
    "asr": ("asr_public", "test-clean-noLM-hyp.ark", "predict.ark"),
    "asr_lm": ("asr_lm_public", "test-clean-LM-hyp.ark", "predict.ark"),
    "ks": ("ks_public", "test_predict.txt", "predict.txt"),
    "sid": ("sid_public", "test_predict.txt", "predict.txt"),
    "ic": ("ic_public", "test_predict.csv", "predict.csv"),
    **{f"er_fold{i}": (f"er_fold{i}_public", f"test_fold{i}_predict.txt", "predict.txt") for i in range(1, 6)},
    "qbe": ("qbe_public", "benchmark.stdlist.xml", "benchmark.stdlist.xml"),
    "sf": ("sf_public", "test-hyp.ark", "predict.ark"),
    "sv": ("sv_public", "test_predict.txt", "predict.txt"),
    "sd": ("sd_public", os.path.join("scoring", "predictions"), os.path.join("scoring", "predictions")),
}
#: superb_<split>.json written by bin/run_downstream for the test split of each task
_RESULT_SPLIT = {"asr": "test-clean", "pr": "test", "ks": "test", "sid": "test"}


class SubmissionError(ValueError):
    """A prediction that cannot go into the bundle, named with its file."""


def _find_relative(path: str, anchor: str) -> Optional[str]:
    """``path`` as given (absolute or from the current directory), else relative to ``anchor``'s folder or any
    folder above it (a config in ``egs/mini/conf/`` names ``data/train`` of ``egs/mini/``)."""
    if os.path.isabs(path) or os.path.exists(path):
        return path if os.path.exists(path) else None
    d = os.path.dirname(os.path.abspath(anchor))
    while True:
        if os.path.exists(os.path.join(d, path)):
            return os.path.join(d, path)
        if os.path.dirname(d) == d:
            return None
        d = os.path.dirname(d)


def _training_data(source: str) -> List[str]:
    """The training data dirs named by a training YAML (``data.train``) or a trainer checkpoint (its ``run_config``);
    for an exported ``model.pt`` without one, the newest checkpoint in ``checkpoints/`` beside it."""
    if source.endswith((".yaml", ".yml")):
        from s3prl_plugins.config import ConfigError, load_config

        try:
            config = load_config(source)
        except ConfigError as e:
            raise SubmissionError(str(e)) from None
    else:
        from s3prl_plugins.models.checkpoint import CheckpointError, read_checkpoint

        try:
            config = read_checkpoint(source).get("run_config")
            if config is None:
                folder = os.path.join(os.path.dirname(os.path.abspath(source)), "checkpoints")
                steps = sorted(glob.glob(os.path.join(folder, "step*.pt")))
                config = read_checkpoint(steps[-1]).get("run_config") if steps else None
        except CheckpointError as e:
            raise SubmissionError(str(e)) from None
        if config is None:
            raise SubmissionError(
                f"--train-config {source}: no training config in it (nor in a checkpoints/ folder beside it); "
                "give the training YAML, or --corpus"
            )
    train = (config.get("data") or {}).get("train") if isinstance(config, dict) else None
    if not train:
        raise SubmissionError(f"--train-config {source}: no data.train in its config; give --corpus")
    return [train] if isinstance(train, str) else list(train)


def corpus_from_training(source: str) -> str:
    """The pre-training corpus of the form, from the data dirs of a training config: their names, the
    utterance count and the hours (``utt2dur``, else the audio files' headers), e.g.
    ``"train (240 utterances, 0.31 h; data dirs of egs/mini/conf/star_tiny.yaml)"``."""
    import soundfile

    from s3prl_plugins.data.kaldi import DataDirError, read_data_dir

    names, utts, seconds = [], 0, 0.0
    for train in _training_data(source):
        path = _find_relative(train, source)
        if path is None:
            raise SubmissionError(
                f"--train-config {source}: its data dir {train} is not here (nor relative to the "
                "config's folders); run from where training ran, or give --corpus"
            )
        try:
            d = read_data_dir(path, check_files=False)
        except DataDirError as e:
            raise SubmissionError(f"--train-config {source}: {e}") from None
        for utt in d.utts:
            if utt in d.utt2dur:
                seconds += d.utt2dur[utt]
            else:
                try:
                    seconds += soundfile.info(d.wav[utt]).duration
                except RuntimeError as e:
                    raise SubmissionError(
                        f"--train-config {source}: cannot read {d.wav[utt]} to count the hours ({e}); give --corpus"
                    ) from None
        names.append(os.path.basename(os.path.normpath(train)))
        utts += len(d.utts)
    return f"{' + '.join(names)} ({utts:,} utterances, {seconds / 3600:.2f} h; data dirs of {source})"


def check_predictions(path: str, task: str) -> int:
    """Lines of a ``<utterance> <prediction>`` file; refuses empty files, malformed lines and repeats."""
    if not os.path.isfile(path):
        raise SubmissionError(f"{task}: no {path} -- run `bin/run_downstream -m evaluate` on that experiment first")
    seen = set()
    n = 0
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            key = line.split(maxsplit=1)[0]
            if path.endswith(".txt") and len(line.split()) < 2:
                raise SubmissionError(f"{path}:{i}: '{line.strip()}' has no prediction after the utterance id")
            if key in seen:
                raise SubmissionError(f"{path}:{i}: utterance {key} predicted twice")
            seen.add(key)
            n += 1
    if n == 0:
        raise SubmissionError(f"{path} is empty: the evaluation wrote no prediction")
    return n


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_card(
    upstream: str, ckpt: Optional[str], corpus: str, name: str, profile: Optional[dict], stride: Optional[int]
) -> dict:
    card = {
        "name": name,
        "upstream": upstream,
        "checkpoint": os.path.abspath(ckpt) if ckpt else None,
        "checkpoint_sha256": _sha256(ckpt) if ckpt and os.path.isfile(ckpt) else None,
        "input": "16 kHz mono waveform (float, -1..1), no normalisation needed",
        "stride_samples": stride,
        "stride_ms": None if stride is None else 1000.0 * stride / 16000,
        "pretraining_corpus": corpus,
    }
    if profile:
        card.update(
            {
                "params": profile["params"],
                "macs_superb": profile["macs_total"],
                "macs_per_second": profile["macs_per_second"],
                "macs_protocol": f"{profile['num_utterances']} utterances, {profile['seconds']:.2f} s in total, "
                "batch 1: the lengths of SUPERB@SLT's 32 LibriSpeech test-clean utterances (1-20 s, 224.86 s); "
                "MACs of a fixed-rate model depend on the lengths only",
            }
        )
    return card


def build_submission(out: str, experiments: Dict[str, str], card: dict) -> dict:
    """Write ``out/{predict/, predict.zip, README.md, results.json, model.json}``; return a summary."""
    unknown = sorted(set(experiments) - set(FILES))
    if unknown:
        raise SubmissionError(f"unknown task(s) {unknown}; the leaderboard takes {', '.join(FILES)}")
    if not experiments:
        raise SubmissionError("no task given: nothing to submit")
    out = os.path.abspath(out)
    included: Dict[str, int] = {}
    results: Dict[str, float] = {}
    warnings: List[str] = []
    # a folder written before folders were marked (kaldi.DIR_MARKER) holds these only, and is still replaced
    legacy = frozenset({"predict", "predict.zip", "README.md", "results.json", "model.json"})
    with atomic_dir(out, legacy=legacy) as tmp:
        os.makedirs(os.path.join(tmp, "predict"))
        for task, expdir in sorted(experiments.items()):
            folder, src_name, dst_name = FILES[task]
            src = os.path.join(expdir, src_name)
            dst = os.path.join(tmp, "predict", folder, dst_name)
            if task == "sd":
                if not os.path.isdir(src) or not os.listdir(src):
                    raise SubmissionError(f"sd: no predictions in {src}")
                shutil.copytree(src, dst)
                if os.path.isfile(os.path.join(expdir, "frame_shift")):
                    shutil.copyfile(
                        os.path.join(expdir, "frame_shift"), os.path.join(tmp, "predict", folder, "frame_shift")
                    )
                included[task] = len(os.listdir(src))
            elif task == "qbe":
                if not os.path.isfile(src) or os.path.getsize(src) == 0:
                    raise SubmissionError(f"qbe: no {src}")
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)
                included[task] = 1
            else:
                included[task] = check_predictions(src, task)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)
            split = _RESULT_SPLIT.get(task)
            measured = os.path.join(expdir, f"superb_{split}.json") if split else None
            if measured and os.path.isfile(measured):
                with open(measured, encoding="utf-8") as f:
                    results.update(json.load(f).get("superb", {}))
        folds = [t for t in included if t.startswith("er_fold")]
        if 0 < len(folds) < 5:
            warnings.append(
                f"ER has {len(folds)} of 5 folds ({', '.join(sorted(folds))}): "
                "the leaderboard scores ER only with all five"
            )
        with zipfile.ZipFile(os.path.join(tmp, "predict.zip"), "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(glob.glob(os.path.join(tmp, "predict", "**", "*"), recursive=True)):
                if os.path.isfile(path):
                    z.write(path, os.path.relpath(path, tmp))
        with open(os.path.join(tmp, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        with open(os.path.join(tmp, "model.json"), "w", encoding="utf-8") as f:
            json.dump(card, f, indent=2)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(_readme(card, included, results, warnings))
    return {
        "out": out,
        "zip": os.path.join(out, "predict.zip"),
        "tasks": included,
        "results": results,
        "warnings": warnings,
    }


def _readme(card: dict, included: Dict[str, int], results: Dict[str, float], warnings: List[str]) -> str:
    def fmt(v):
        return "-" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))

    lines = [
        f"# SUPERB submission: {card['name']}",
        "",
        f"Built {datetime.date.today().isoformat()} by `python -m s3prl_plugins.bin.superb_submission`. Upload "
        "`predict.zip` on the leaderboard's submission page (public set); the form asks for the fields below.",
        "",
        "| field | value |",
        "|---|---|",
        f"| upstream (s3prl hub entry) | `{card['upstream']}` |",
        f"| checkpoint | `{fmt(card.get('checkpoint'))}` (sha256 `{fmt(card.get('checkpoint_sha256'))}`) |",
        f"| parameters | {fmt(card.get('params'))} |",
        f"| MACs (SUPERB@SLT protocol) | {fmt(card.get('macs_superb'))} |",
        "| MACs per second of speech | "
        f"{fmt(None if card.get('macs_per_second') is None else round(card['macs_per_second']))} |",
        f"| MAC protocol | {fmt(card.get('macs_protocol'))} |",
        f"| stride | {fmt(card.get('stride_samples'))} samples ({fmt(card.get('stride_ms'))} ms) |",
        f"| input | {card['input']} |",
        f"| pre-training corpus | {card['pretraining_corpus']} |",
        "",
        "## Tasks in predict.zip",
        "",
        "| task | folder | predictions | measured by -m evaluate |",
        "|---|---|---|---|",
    ]
    keys = {"asr": "ASR", "pr": "PR", "ks": "KS", "sid": "SID"}
    for task, n in sorted(included.items()):
        m = results.get(keys.get(task, ""), None)
        lines.append(f"| {task} | `predict/{FILES[task][0]}/` | {n} | {'-' if m is None else f'{m:.2f}'} |")
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    lines += [
        "",
        "`results.json` holds the measured metrics: `python -m s3prl_plugins.bin.superb_score results.json`.",
        "",
    ]
    return "\n".join(lines)
