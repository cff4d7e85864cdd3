"""ASR-5k through ESPnet: frozen upstream features (``frontend: s3prl``), CTC over sentencepiece BPE.

The stages of ESPnet's ``egs2/TEMPLATE/asr1/asr.sh`` that matter for a frozen SSL front-end, each run as
the same ``espnet2.bin.*`` command ``asr.sh`` would issue, in a fresh process (the ESPnet wheel ships no
``asr.sh``; ENVIRONMENT.md) -- so our upstream must be registered in every one of them, which the
start-up hook does (:mod:`s3prl_plugins._autoload`):

1. :func:`prepare_dump`: ``<work>/dump/<set>/{wav.scp,text}`` from a Kaldi data dir (plain mono 16 kHz
   audio files -- ESPnet's ``sound`` reader takes them as they are; text checked non-empty).
2. :func:`train_bpe`: sentencepiece on the training text as ``asr.sh`` runs ``spm_train``
   (``--model_type unigram --character_coverage 1.0``), and the token list ``asr.sh`` writes:
   ``<blank>``, ``<unk>``, the pieces by decreasing frequency on the training text, ``<sos/eos>``.
   LibriSpeech 100 h uses 5000 units (ASR-5k); a vocabulary larger than the text allows is refused
   with the largest size that fits.
3. :func:`collect_stats`: ``espnet2.bin.asr_train --collect_stats true`` then
   ``espnet2.bin.aggregate_stats_dirs``, and ``text_shape.bpe`` (each shape with the vocabulary size
   appended, as ``asr.sh`` does).
4. :func:`train`: ``espnet2.bin.asr_train`` with the config (``freeze_param: [frontend.upstream]``).
5. :func:`decode`: ``espnet2.bin.asr_inference`` CTC only (``--ctc_weight 1.0 --lm_weight 0
   --beam_size 1``: greedy CTC) with the best model by validation loss.
6. :func:`score`: WER (and CER) of ``1best_recog/text`` against the reference with ``jiwer`` -- ESPnet's
   own scoring is sclite, which is not installable from PyPI.

Every command line is written to ``<work>/log/<stage>.cmd`` and its output to ``<work>/log/<stage>.log``;
a failure raises :class:`EspnetError` with the log's tail and the log's path.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

import yaml

from s3prl_plugins.data.kaldi import read_data_dir, read_table

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class EspnetError(RuntimeError):
    """A stage that failed or cannot start, with what to do."""


def _atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def prepare_dump(data_dir: str, out: str) -> str:
    """``out/{wav.scp,text}`` for ESPnet from a Kaldi data dir; returns ``out``."""
    import soundfile as sf

    d = read_data_dir(data_dir)
    if not d.text:
        raise EspnetError(f"{data_dir}/text: no transcripts; ASR needs them")
    wav, text = [], []
    for utt in d.utts:
        path = d.wav[utt]
        if len(path.split()) != 1 or not os.path.isfile(path):
            raise EspnetError(
                f"{data_dir}/wav.scp: {utt}: {path!r} is not an audio file (ESPnet's sound reader needs files)"
            )
        info = sf.info(path)
        if info.samplerate != SAMPLE_RATE or info.channels != 1:
            raise EspnetError(
                f"{data_dir}/wav.scp: {path} is {info.channels} ch at {info.samplerate} Hz; "
                f"the front-end takes mono {SAMPLE_RATE} Hz (bin/prepare_data resamples)"
            )
        t = d.text.get(utt, "").strip()
        if not t:
            raise EspnetError(f"{data_dir}/text: {utt} has no transcript")
        wav.append(f"{utt} {os.path.abspath(path)}")
        text.append(f"{utt} {t}")
    _atomic_write(os.path.join(out, "text"), "\n".join(text) + "\n")
    _atomic_write(os.path.join(out, "wav.scp"), "\n".join(wav) + "\n")
    return out


def _texts(text_file: str) -> List[str]:
    with open(text_file, encoding="utf-8") as f:
        return [line.split(maxsplit=1)[1] if len(line.split(maxsplit=1)) > 1 else "" for line in f if line.strip()]


def train_bpe(text_file: str, out_dir: str, vocab_size: int, model_type: str = "unigram") -> Dict[str, str]:
    """Sentencepiece model and ESPnet token list from a Kaldi ``text``; returns their paths."""
    import sentencepiece as spm

    os.makedirs(out_dir, exist_ok=True)
    texts = _texts(text_file)
    corpus = os.path.join(out_dir, "train.txt")
    _atomic_write(corpus, "\n".join(texts) + "\n")
    prefix = os.path.join(out_dir, "bpe")
    try:
        spm.SentencePieceTrainer.train(
            input=corpus,
            vocab_size=vocab_size,
            model_type=model_type,
            model_prefix=prefix,
            character_coverage=1.0,
            input_sentence_size=100000000,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e)
        if "Vocabulary size too high" in msg or "vocab_size" in msg:
            raise EspnetError(
                f"{text_file}: cannot train {vocab_size} BPE units on this text ({msg.strip()}); "
                "choose a smaller --nbpe (ASR-5k is LibriSpeech 100 h's size)"
            ) from e
        raise
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    counts: collections.Counter = collections.Counter()
    for t in texts:
        counts.update(sp.encode(t, out_type=str))
    pieces = [p for p, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    tokens = ["<blank>", "<unk>"] + [p for p in pieces if p not in ("<unk>", "<blank>", "<sos/eos>")] + ["<sos/eos>"]
    token_list = os.path.join(out_dir, "tokens.txt")
    _atomic_write(token_list, "\n".join(tokens) + "\n")
    return {"bpemodel": prefix + ".model", "token_list": token_list}


def check_covered(text_file: str, bpemodel: str) -> None:
    """Every character of ``text_file`` is in the BPE model (else ESPnet would train/score ``<unk>``)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=bpemodel)
    unk = sp.unk_id()
    with open(text_file, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split(maxsplit=1)
            if len(parts) < 2:
                continue
            unknown = sorted({ch for ch in parts[1] if ch != " " and unk in sp.encode(ch)})
            if unknown:
                raise EspnetError(
                    f"{text_file}: {parts[0]} has characters outside the token list ({' '.join(unknown)}); "
                    f"the BPE model {bpemodel} was trained on the training text: normalise the text "
                    "or train the BPE on text that has them"
                )


def espnet_command(module: str, args: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", f"espnet2.bin.{module}", *map(str, args)]


def run_stage(name: str, cmd: Sequence[str], work: str, timeout: Optional[float] = None) -> str:
    """Run one ESPnet command in a fresh process; log to ``<work>/log/<name>.log``; raise on failure."""
    log_dir = os.path.join(work, "log")
    os.makedirs(log_dir, exist_ok=True)
    _atomic_write(os.path.join(log_dir, f"{name}.cmd"), " ".join(cmd) + "\n")
    log = os.path.join(log_dir, f"{name}.log")
    logger.info("%s: %s (log: %s)", name, " ".join(cmd[2:4]), log)
    with open(log, "w", encoding="utf-8") as f:
        r = subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if r.returncode != 0:
        with open(log, encoding="utf-8", errors="replace") as f:
            tail = "".join(f.readlines()[-25:])
        raise EspnetError(f"ESPnet stage {name} failed (exit {r.returncode}); the end of {log}:\n{tail}")
    return log


def _data_args(prefix: str, dump: str) -> List[str]:
    return [
        f"--{prefix}_data_path_and_name_and_type",
        f"{dump}/wav.scp,speech,sound",
        f"--{prefix}_data_path_and_name_and_type",
        f"{dump}/text,text,text",
    ]


def _token_args(bpe: Dict[str, str]) -> List[str]:
    return [
        "--token_type",
        "bpe",
        "--bpemodel",
        bpe["bpemodel"],
        "--token_list",
        bpe["token_list"],
        "--use_preprocessor",
        "true",
    ]


def check_config(config: str) -> dict:
    """The config's front-end names a registered s3prl upstream (refused by name otherwise)."""
    with open(config, encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    if conf.get("frontend") == "s3prl":
        name = conf.get("frontend_conf", {}).get("frontend_conf", {}).get("upstream")
        import s3prl.hub as hub

        if not name or not callable(getattr(hub, name, None)):
            ours = sorted(n for n in dir(hub) if n.endswith("_local") and ("star" in n or "hubert" in n))
            raise EspnetError(
                f"{config}: frontend_conf.frontend_conf.upstream {name!r} is not an s3prl.hub entry "
                f"(is s3prl-plugins installed in this environment? e.g. {', '.join(ours[:6])})"
            )
    return conf


def collect_stats(
    config: str, train_dump: str, valid_dump: str, bpe: Dict[str, str], work: str, extra: Sequence[str] = ()
) -> str:
    stats = os.path.join(work, "stats")
    one = os.path.join(stats, "logdir", "stats.1")
    shutil.rmtree(stats, ignore_errors=True)
    run_stage(
        "collect_stats",
        espnet_command(
            "asr_train",
            [
                "--collect_stats",
                "true",
                "--config",
                config,
                *_token_args(bpe),
                *_data_args("train", train_dump),
                *_data_args("valid", valid_dump),
                "--train_shape_file",
                f"{train_dump}/wav.scp",
                "--valid_shape_file",
                f"{valid_dump}/wav.scp",
                "--output_dir",
                one,
                "--ngpu",
                "0",
                "--num_workers",
                "0",
                *extra,
            ],
        ),
        work,
    )
    run_stage(
        "aggregate_stats", espnet_command("aggregate_stats_dirs", ["--input_dir", one, "--output_dir", stats]), work
    )
    with open(bpe["token_list"], encoding="utf-8") as f:
        n = sum(1 for line in f if line.strip())
    for part in ("train", "valid"):
        with open(os.path.join(stats, part, "text_shape"), encoding="utf-8") as f:
            lines = [f"{line.rstrip()},{n}" for line in f if line.strip()]
        _atomic_write(os.path.join(stats, part, "text_shape.bpe"), "\n".join(lines) + "\n")
    return stats


def train(
    config: str,
    train_dump: str,
    valid_dump: str,
    bpe: Dict[str, str],
    stats: str,
    work: str,
    ngpu: int = 0,
    extra: Sequence[str] = (),
) -> str:
    exp = os.path.join(work, "asr")
    run_stage(
        "train",
        espnet_command(
            "asr_train",
            [
                "--config",
                config,
                *_token_args(bpe),
                *_data_args("train", train_dump),
                *_data_args("valid", valid_dump),
                "--train_shape_file",
                f"{stats}/train/speech_shape",
                "--train_shape_file",
                f"{stats}/train/text_shape.bpe",
                "--valid_shape_file",
                f"{stats}/valid/speech_shape",
                "--valid_shape_file",
                f"{stats}/valid/text_shape.bpe",
                # asr.sh's fold lengths for raw audio: 800 frames x 100 samples, and 150 tokens
                "--fold_length",
                "80000",
                "--fold_length",
                "150",
                "--resume",
                "true",
                "--output_dir",
                exp,
                "--ngpu",
                str(ngpu),
                *extra,
            ],
        ),
        work,
    )
    return exp


def best_model(exp: str) -> str:
    for name in ("valid.loss.best.pth", "valid.loss.ave.pth", "latest.pth"):
        p = os.path.join(exp, name)
        if os.path.exists(p):
            return p
    raise EspnetError(f"{exp}: no trained model (valid.loss.best.pth); run the train stage first")


def decode(exp: str, test_dump: str, work: str, name: str = "test", ngpu: int = 0, extra: Sequence[str] = ()) -> str:
    out = os.path.join(work, "decode", name)
    run_stage(
        f"decode_{name}",
        espnet_command(
            "asr_inference",
            [
                "--asr_train_config",
                os.path.join(exp, "config.yaml"),
                "--asr_model_file",
                best_model(exp),
                "--data_path_and_name_and_type",
                f"{test_dump}/wav.scp,speech,sound",
                "--key_file",
                f"{test_dump}/wav.scp",
                "--output_dir",
                out,
                "--ctc_weight",
                "1.0",
                "--lm_weight",
                "0.0",
                "--beam_size",
                "1",
                "--batch_size",
                "1",
                "--ngpu",
                str(ngpu),
                *extra,
            ],
        ),
        work,
    )
    hyp = os.path.join(out, "1best_recog", "text")
    if not os.path.isfile(hyp):
        raise EspnetError(f"asr_inference wrote no {hyp}; see {work}/log/decode_{name}.log")
    return hyp


def score(ref_text: str, hyp_text: str, out_json: Optional[str] = None) -> dict:
    """WER and CER (%) with jiwer; an utterance missing from the hypotheses counts as all deletions."""
    import jiwer

    ref, hyp = read_table(ref_text), read_table(hyp_text)
    extra = sorted(set(hyp) - set(ref))
    if extra:
        raise EspnetError(
            f"{hyp_text}: {len(extra)} utterance(s) not in {ref_text} (e.g. {extra[0]}): "
            "a transcript that does not match"
        )
    utts = sorted(ref)
    refs, hyps = [ref[u] for u in utts], [hyp.get(u, "") for u in utts]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    result = {
        "wer": 100.0 * words.wer,
        "cer": 100.0 * chars.cer,
        "utterances": len(utts),
        "missing": len(set(ref) - set(hyp)),
        "words": sum(len(r.split()) for r in refs),
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
    }
    if out_json:
        _atomic_write(out_json, json.dumps(result, indent=2) + "\n")
    return result
