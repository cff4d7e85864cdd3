"""Keyword-spotting (KS) and speaker-identification (SID) subsets of the mini corpus, for the SUPERB
KS and SID downstream tasks on a laptop.

**KS** follows Speech Commands v0.01 as SUPERB uses it: 12 classes -- ten keywords (yes, no, up, down,
left, right, on, off, stop, go), ``_unknown_`` (other words) and ``_silence_`` (background noise only).
Every speaker of the corpus (same espeak-ng voice, same train/dev/test split) says each keyword
``takes`` times at a rate and pitch drawn per clip, and ``unknown`` other words from the corpus
vocabulary; each word is placed at a random offset in a one-second clip over background noise (white,
pink or brown) at an SNR drawn from ``snr_db``. Two layouts of the same files are written:

- Speech Commands' own, so s3prl's ``speech_commands`` downstream reads them unchanged::

      speech_commands_v0.01/<word>/<hash>_nohash_<n>.wav      train + dev speakers
      speech_commands_v0.01/_background_noise_/*.wav           10 s noise files (s3prl's silence)
      speech_commands_v0.01/_silence_/<hash>_nohash_<n>.wav    1 s noise-only clips
      speech_commands_v0.01/validation_list.txt                the dev speakers' clips
      speech_commands_test_set_v0.01/<class>/<hash>_nohash_<n>.wav   test speakers, 12 class folders

  Each speaker's hash is chosen so that Speech Commands' split rule (SHA-1 of the hash, the rule
  s3prl's ``split_dataset`` applies) puts dev speakers in its validation 10 % and train speakers in its
  training 80 %: s3prl's train/dev split is then exactly ours.
- Kaldi data dirs ``data/ks_{train,dev,test}`` (``text`` holds the class label).

**SID** uses the corpus's own utterances with every speaker in every split (SUPERB SID is closed-set,
like VoxCeleb1's identification split): per speaker, ``sid_heldout`` fractions of the utterances go
to dev and test and the rest to train -> ``data/sid_{train,dev,test}`` (``utt2spk`` is the label).

Everything is written to ``<corpus>/subsets.tmp`` and renamed to ``<corpus>/subsets`` at the end, and
is deterministic for the corpus's seed.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from s3prl_plugins.data.kaldi import DataDir, write_data_dir
from s3prl_plugins.data.mini_corpus import SAMPLE_RATE, CorpusError, espeak_available, publish, synth_word
from s3prl_plugins.data.text import ADJECTIVES, NOUNS

logger = logging.getLogger(__name__)

KEYWORDS: Tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
#: SUPERB KS's 12 classes in s3prl's order.
CLASSES: Tuple[str, ...] = KEYWORDS + (UNKNOWN, SILENCE)
NOISES: Tuple[str, ...] = ("white", "pink", "brown")
CLIP = SAMPLE_RATE  # one second
MAX_UTTR_PER_CLASS = 2**27 - 1  # Speech Commands' split rule constant


@dataclass
class SubsetConfig:
    """What :func:`make_subsets` makes.

    Attributes:
        takes: renditions of each keyword per speaker.
        unknown: clips of non-keyword words per speaker.
        silence: noise-only clips per speaker.
        snr_db: SNR range (dB) of the background noise under each word.
        rate: espeak-ng words-per-minute range, drawn per clip (fast enough that words fit in 1 s).
        pitch: espeak-ng pitch range, drawn per clip.
        sid_heldout: fractions of each speaker's utterances for SID dev and test (at least one each;
            5 + 5 of the default corpus's 45 per speaker).
    """

    takes: int = 4
    unknown: int = 10
    silence: int = 4
    snr_db: Tuple[float, float] = (5.0, 25.0)
    rate: Tuple[int, int] = (160, 230)
    pitch: Tuple[int, int] = (20, 80)
    sid_heldout: Tuple[float, float] = (0.11, 0.11)


def speech_commands_split(filename: str) -> str:
    """Speech Commands' split of a ``<hash>_nohash_<n>.wav`` file: 'validation' (SHA-1 bucket < 10 %),
    'testing' (< 20 %) or 'training' -- the rule of the dataset's README and s3prl's ``split_dataset``."""
    speaker = re.sub(r"_nohash_.*$", "", os.path.basename(filename))
    bucket = (int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16) % (MAX_UTTR_PER_CLASS + 1)) * (
        100.0 / MAX_UTTR_PER_CLASS
    )
    return "validation" if bucket < 10 else "testing" if bucket < 20 else "training"


def speaker_hash(seed: int, speaker: str, split: str) -> str:
    """An 8-hex-digit Speech Commands speaker id for ``speaker`` that the split rule puts in ``split``."""
    want = {"train": "training", "dev": "validation", "test": "testing"}[split]
    for i in range(10000):
        cand = hashlib.sha1(f"{seed}-{speaker}-{i}".encode()).hexdigest()[:8]
        if speech_commands_split(f"{cand}_nohash_0.wav") == want:
            return cand
    raise AssertionError("unreachable: a 10 % bucket is hit within 10000 draws")


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of white, pink (1/f power) or brown (1/f^2 power) noise at unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype="float64")
    f[0] = 1.0
    spec *= {"white": 1.0, "pink": f**-0.5, "brown": f**-1.0}[kind]
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype("float32")


def _unknown_words() -> List[str]:
    return sorted({w for w in NOUNS + ADJECTIVES if w not in KEYWORDS and len(w) <= 7})


@dataclass
class _Clip:
    speaker: str
    split: str
    voice: str
    label: str  # class label (KEYWORDS, UNKNOWN, SILENCE)
    word: str  # the spoken word ('' for silence)
    index: int  # n of <hash>_nohash_<n> within the word folder


def _plan(speakers: List[Tuple[str, str, str]], config: SubsetConfig, seed: int) -> List[_Clip]:
    rng = random.Random(f"ks-{seed}")
    words = _unknown_words()
    clips = []
    for spk, split, voice in speakers:
        for kw in KEYWORDS:
            clips += [_Clip(spk, split, voice, kw, kw, t) for t in range(config.takes)]
        count: Dict[str, int] = {}
        for _ in range(config.unknown):
            w = rng.choice(words)
            clips.append(_Clip(spk, split, voice, UNKNOWN, w, count.get(w, 0)))
            count[w] = count.get(w, 0) + 1
        clips += [_Clip(spk, split, voice, SILENCE, "", t) for t in range(config.silence)]
    return clips


def _render(clip: _Clip, config: SubsetConfig, seed: int) -> np.ndarray:
    key = f"{seed}-{clip.speaker}-{clip.label}-{clip.word}-{clip.index}"
    rng = random.Random(key)
    nrng = np.random.default_rng(int(hashlib.sha1(key.encode()).hexdigest()[:8], 16))
    bg = noise(rng.choice(NOISES), CLIP, nrng)
    if clip.label == SILENCE:
        return (bg * 10 ** (rng.uniform(-50, -20) / 20)).astype("float32")
    rate = rng.randint(*config.rate)
    for _ in range(4):
        audio, _ = synth_word(clip.word, clip.voice, rate, rng.randint(*config.pitch))
        if audio.size <= int(0.95 * CLIP):
            break
        rate += 40  # too long for a one-second clip: say it faster
    else:
        raise CorpusError(f"espeak-ng says {clip.word!r} in more than 0.95 s even at {rate} wpm")
    wav = np.zeros(CLIP, dtype="float32")
    start = rng.randint(0, CLIP - audio.size)
    wav[start : start + audio.size] = audio
    power = float(np.mean(audio**2))  # the word's own power, not diluted by the clip's silence
    wav += bg * math.sqrt(power / 10 ** (rng.uniform(*config.snr_db) / 10))
    peak = float(np.abs(wav).max())
    return (wav * (0.99 / peak) if peak > 0.99 else wav).astype("float32")


def _read_speakers(corpus_dir: str) -> List[Tuple[str, str, str]]:
    path = os.path.join(corpus_dir, "SPEAKERS.txt")
    if not os.path.isfile(path):
        raise CorpusError(f"{path} is missing: {corpus_dir} is not a finished mini corpus (make_mini_corpus writes it)")
    out = []
    with open(path) as f:
        for line in f:
            if line.startswith(";") or not line.strip():
                continue
            spk, split, voice = (x.strip() for x in line.split("|"))
            out.append((spk, split, voice))
    return out


def make_subsets(
    corpus_dir: str,
    config: Optional[SubsetConfig] = None,
    kinds: Sequence[str] = ("ks", "sid"),
    jobs: int = 2,
    progress: bool = True,
) -> Dict[str, object]:
    """Write ``<corpus_dir>/subsets`` with the ``kinds`` asked for (``ks``, ``sid``; see the module
    docstring); returns a summary. A finished one made with the same config is kept; one made with
    another config is made again."""
    config = config or SubsetConfig()
    done_path = os.path.join(corpus_dir, ".done")
    if not os.path.isfile(done_path):
        raise CorpusError(f"{corpus_dir} is not a finished mini corpus (no .done); run make_mini_corpus first")
    with open(done_path) as f:
        seed = int(json.load(f)["config"]["seed"])
    out_dir = os.path.join(corpus_dir, "subsets")
    kinds = sorted(set(kinds))
    if not kinds or set(kinds) - {"ks", "sid"}:
        raise ValueError(f"kinds must be some of 'ks', 'sid'; got {kinds}")
    cfg_json = json.loads(json.dumps(dict(asdict(config), kinds=kinds)))
    if os.path.isfile(os.path.join(out_dir, ".done")):
        with open(os.path.join(out_dir, ".done")) as f:
            summary = json.load(f)
        if summary.get("config") == cfg_json:
            logger.info("%s: subsets already made, kept", out_dir)
            return summary
        logger.info("%s was made with another config: made again", out_dir)
    if "ks" in kinds and not espeak_available():
        raise CorpusError("espeak-ng is not installed: apt-get install espeak-ng (tools/setup_env.sh does)")
    speakers = _read_speakers(corpus_dir)
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    summary: Dict[str, object] = {"config": cfg_json}
    try:
        if "ks" in kinds:
            summary.update(_make_ks(tmp, out_dir, speakers, config, seed, jobs, progress))
        if "sid" in kinds:
            summary.update(_make_sid(tmp, corpus_dir, config, seed))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-made is left; a finished subsets/ stays
        raise
    publish(
        tmp,
        out_dir,
        "Keyword-spotting (Speech Commands v0.01 layout + data/ks_*) and speaker-identification "
        "(data/sid_*) subsets of the mini corpus; see s3prl_plugins/data/mini_subsets.py.\n",
        summary,
        replace=True,
    )
    return summary


def _make_ks(
    tmp: str, out_dir: str, speakers, config: SubsetConfig, seed: int, jobs: int, progress: bool
) -> Dict[str, object]:
    import soundfile as sf
    from tqdm import tqdm

    sc_root = os.path.join(tmp, "speech_commands_v0.01")
    sc_test = os.path.join(tmp, "speech_commands_test_set_v0.01")
    hashes = {spk: speaker_hash(seed, spk, split) for spk, split, _ in speakers}

    # Background noise files: s3prl's training silence is drawn from these.
    os.makedirs(os.path.join(sc_root, "_background_noise_"))
    nrng = np.random.default_rng(seed)
    for kind in NOISES:
        sf.write(
            os.path.join(sc_root, "_background_noise_", f"{kind}_noise.wav"),
            0.05 * noise(kind, 10 * SAMPLE_RATE, nrng),
            SAMPLE_RATE,
            subtype="PCM_16",
        )

    def rel_path(clip: _Clip) -> Tuple[str, str]:
        """(root, folder/file) of a clip in the Speech Commands layouts."""
        name = f"{hashes[clip.speaker]}_nohash_{clip.index}.wav"
        if clip.split == "test":
            return sc_test, os.path.join(clip.label, f"{clip.word}-{name}" if clip.label == UNKNOWN else name)
        return sc_root, os.path.join(clip.word or SILENCE, name)

    def work(clip: _Clip):
        root, rel = rel_path(clip)
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        sf.write(os.path.join(root, rel), _render(clip, config, seed), SAMPLE_RATE, subtype="PCM_16")
        return clip, root, rel

    clips = _plan(speakers, config, seed)
    ks = {s: DataDir() for s in ("train", "dev", "test")}
    validation = []
    final = lambda root, rel: os.path.abspath(  # noqa: E731
        os.path.join(out_dir, os.path.relpath(os.path.join(root, rel), tmp))
    )
    with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        it = pool.map(work, clips)
        for clip, root, rel in tqdm(
            it,
            total=len(clips),
            desc="keyword clips",
            disable=not progress,
            mininterval=1.0 if sys.stderr.isatty() else 15.0,
        ):
            utt = f"{clip.speaker}-ks-{clip.label.strip('_')}-{clip.word or 'noise'}-{clip.index}"
            d = ks[clip.split]
            d.wav[utt], d.text[utt], d.utt2spk[utt], d.utt2dur[utt] = final(root, rel), clip.label, clip.speaker, 1.0
            if clip.split == "dev":
                validation.append(rel)
    with open(os.path.join(sc_root, "validation_list.txt"), "w") as f:
        f.write("".join(f"{r}\n" for r in sorted(validation)))
    for split, d in ks.items():
        if d.wav:
            write_data_dir(d, os.path.join(tmp, "data", f"ks_{split}"))
    return {"ks_clips": {s: len(d.wav) for s, d in ks.items()}, "ks_classes": list(CLASSES)}


def _make_sid(tmp: str, corpus_dir: str, config: SubsetConfig, seed: int) -> Dict[str, object]:
    """SID: the corpus's utterances, every speaker in every split."""
    sid = {s: DataDir() for s in ("train", "dev", "test")}
    for split in ("train", "dev", "test"):
        ref = os.path.join(corpus_dir, "reference", f"{split}.jsonl")
        if not os.path.isfile(ref):
            continue
        by_spk: Dict[str, List[dict]] = {}
        with open(ref) as f:
            for line in f:
                r = json.loads(line)
                by_spk.setdefault(r["speaker"], []).append(r)
        for spk, items in sorted(by_spk.items()):
            items = sorted(items, key=lambda r: r["utt"])
            random.Random(f"sid-{seed}-{spk}").shuffle(items)
            if len(items) < 3:
                raise CorpusError(
                    f"speaker {spk} has {len(items)} utterances; SID needs at least 3 per speaker (train, dev, test); "
                    "make a larger corpus or leave SID out (--subsets ks)"
                )
            n_dev, n_test = (max(1, round(frac * len(items))) for frac in config.sid_heldout)
            if n_dev + n_test >= len(items):
                raise CorpusError(
                    f"speaker {spk}: sid_heldout {config.sid_heldout} of {len(items)} utterances "
                    "leaves none for training"
                )
            parts = {"test": items[:n_test], "dev": items[n_test : n_test + n_dev], "train": items[n_test + n_dev :]}
            for part, rows in parts.items():
                d = sid[part]
                for r in rows:
                    u = r["utt"]
                    chapter = u.split("-")[1]
                    d.wav[u] = os.path.abspath(
                        os.path.join(corpus_dir, "LibriSpeech", split, spk, chapter, f"{u}.flac")
                    )
                    d.text[u] = " ".join(w["word"] for w in r["words"]).upper()
                    d.utt2spk[u], d.utt2dur[u] = spk, float(r["duration"])
    for part, d in sid.items():
        write_data_dir(d, os.path.join(tmp, "data", f"sid_{part}"))
    return {"sid_utterances": {s: len(d.wav) for s, d in sid.items()}, "sid_speakers": len(sid["train"].spk2utt)}
