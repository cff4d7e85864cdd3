"""The embedded mini corpus: English speech synthesised offline with espeak-ng, in LibriSpeech's layout,
with exactly known word boundaries.

Every word is synthesised on its own (voice, rate and pitch fixed per utterance), its digital silence
trimmed, and the words joined with pauses of known random length -- so word boundaries are exact, not
estimated. espeak-ng's phoneme transcription of each word (``-x --sep=_``, stress marks removed) gives
the phone sequence. Speakers are (accent, voice variant) pairs; rate and pitch vary per utterance;
additive noise and a synthetic room reverberation are options. The result is deterministic for a seed.

Layout (what ``prepare_librispeech`` reads unchanged)::

    OUT/LibriSpeech/{train,dev,test}/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
    OUT/LibriSpeech/{train,dev,test}/<spk>/<chapter>/<spk>-<chapter>.trans.txt
    OUT/reference/{train,dev,test}.jsonl     # per utterance: words with exact times, phones, voice...
    OUT/lexicon.txt                          # WORD  phone phone ... (espeak-ng, per accent merged)
    OUT/SPEAKERS.txt, OUT/README.txt, OUT/.done
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import zlib
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from s3prl_plugins.data.text import sentence

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
QUANTUM = 2.0 / 32768  # two 16-bit steps: survives PCM_16 rounding
TAIL_DB = -50.0  # word edges: first/last sample within 50 dB of the word's peak

# (accent voice, variant): 8 accents x 2 variants, one male-ish and one female-ish.
SPEAKER_VOICES: List[str] = [
    f"{accent}+{variant}"
    for accent in (
        "en-us",
        "en-gb",
        "en-gb-scotland",
        "en-gb-x-rp",
        "en-gb-x-gbclan",
        "en-gb-x-gbcwmd",
        "en-029",
        "en-us-nyc",
    )
    for variant in ("m3", "f2")
]


class CorpusError(RuntimeError):
    """The corpus cannot be made here (espeak-ng missing, output folder in the way, ...)."""


@dataclass
class MiniCorpusConfig:
    """What the generator makes.

    Attributes:
        seed: everything random derives from it.
        utts_per_speaker: utterances per speaker.
        split_speakers: speakers per split (train/dev/test are speaker-disjoint, as in LibriSpeech).
        rate: espeak-ng words-per-minute range, drawn per utterance.
        pitch: espeak-ng pitch range (0-99), drawn per utterance.
        pause: pause between words, seconds.
        edge_silence: silence before the first and after the last word, seconds.
        noise_snr_db: if set, add white noise at an SNR drawn from this range (dB).
        reverb_prob: probability an utterance is convolved with a synthetic room response.
        min_words, max_words: sentence length.
    """

    seed: int = 0
    utts_per_speaker: int = 45
    split_speakers: Dict[str, int] = field(default_factory=lambda: {"train": 12, "dev": 2, "test": 2})
    rate: Tuple[int, int] = (130, 210)
    pitch: Tuple[int, int] = (25, 75)
    pause: Tuple[float, float] = (0.02, 0.2)
    edge_silence: Tuple[float, float] = (0.1, 0.3)
    noise_snr_db: Optional[Tuple[float, float]] = None
    reverb_prob: float = 0.0
    min_words: int = 5
    max_words: int = 14


@dataclass
class Utterance:
    utt_id: str
    split: str
    speaker: str
    chapter: str
    voice: str
    rate: int
    pitch: int
    words: List[str]


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def clean_phones(raw: str) -> List[str]:
    """espeak-ng ``-x --sep=_`` output of one word -> phone symbols (stress and syllable marks dropped)."""
    phones = []
    for tok in raw.replace("\n", " ").replace(" ", "_").split("_"):
        tok = tok.replace("'", "").replace(",", "").replace("%", "").replace("=", "").strip()
        if tok and tok not in ("||", "|"):
            phones.append(tok)
    return phones


def synth_word(word: str, voice: str, rate: int, pitch: int) -> Tuple[np.ndarray, List[str]]:
    """Audio (float32 at 16 kHz, digital silence trimmed) and phones of one word."""
    import soundfile as sf

    proc = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-x", "--sep=_", "--stdout", word],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise CorpusError(f"espeak-ng failed on {word!r} with voice {voice}: {proc.stderr.decode(errors='replace')}")
    # -x writes the phonemes to stdout ahead of the WAV stream: split at "RIFF".
    out = proc.stdout
    riff = out.find(b"RIFF")
    if riff < 0:
        raise CorpusError(f"espeak-ng produced no audio for {word!r}")
    phones = clean_phones(out[:riff].decode(errors="replace"))
    audio, rate_in = sf.read(io.BytesIO(out[riff:]), dtype="float32")
    audio = _resample(audio, rate_in, SAMPLE_RATE)
    # Trim at the output rate, keeping samples above both 16-bit PCM's resolution and TAIL_DB below the
    # word's peak (some voice variants add a long inaudible breath tail at -60..-75 dB that would put
    # the "exact" word end far past the audible one). The word's first and last samples in the corpus
    # are then sound, and everything around them is digital silence.
    threshold = max(QUANTUM, float(np.abs(audio).max()) * 10 ** (TAIL_DB / 20))
    nz = np.flatnonzero(np.abs(audio) >= threshold)
    if nz.size == 0:
        raise CorpusError(f"espeak-ng produced silence for {word!r}")
    return audio[nz[0] : nz[-1] + 1], phones


def _resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return audio
    import torch
    import torchaudio

    return torchaudio.functional.resample(torch.from_numpy(audio), src, dst).numpy()


def _room_response(rng: np.random.Generator, rt60: float) -> np.ndarray:
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    rir[0] = 1.0
    return (rir / np.sqrt(np.sum(rir**2))).astype("float32")


def render(utt: Utterance, config: MiniCorpusConfig) -> Tuple[np.ndarray, List[dict]]:
    """Synthesise one utterance; returns the waveform and the words with exact (start, end) seconds."""
    rng = random.Random(f"{config.seed}-{utt.utt_id}")
    pieces = [np.zeros(int(rng.uniform(*config.edge_silence) * SAMPLE_RATE), dtype="float32")]
    pos = pieces[0].size
    words = []
    for i, word in enumerate(utt.words):
        audio, phones = synth_word(word, utt.voice, utt.rate, utt.pitch)
        words.append(
            {"word": word, "start": pos / SAMPLE_RATE, "end": (pos + audio.size) / SAMPLE_RATE, "phones": phones}
        )
        pieces.append(audio)
        pos += audio.size
        gap = config.edge_silence if i == len(utt.words) - 1 else config.pause
        silence = np.zeros(int(rng.uniform(*gap) * SAMPLE_RATE), dtype="float32")
        pieces.append(silence)
        pos += silence.size
    wav = np.concatenate(pieces)
    nrng = np.random.default_rng(zlib.crc32(f"{config.seed}-{utt.utt_id}".encode()))
    if config.reverb_prob and rng.random() < config.reverb_prob:
        rir = _room_response(nrng, rng.uniform(0.2, 0.6))
        wav = np.convolve(wav, rir)[: wav.size].astype("float32")
    if config.noise_snr_db:
        snr = rng.uniform(*config.noise_snr_db)
        power = float(np.mean(wav**2))
        wav = wav + nrng.standard_normal(wav.size).astype("float32") * math.sqrt(power / 10 ** (snr / 10))
    peak = float(np.abs(wav).max())
    if peak > 0.99:
        wav = wav * (0.99 / peak)
    return wav.astype("float32"), words


def plan(config: MiniCorpusConfig) -> List[Utterance]:
    """The utterances to make (speakers, voices, rates, pitches, sentences), from the seed alone."""
    rng = random.Random(config.seed)
    total = sum(config.split_speakers.values())
    if total > len(SPEAKER_VOICES):
        raise CorpusError(f"{total} speakers asked for, {len(SPEAKER_VOICES)} voices available")
    voices = list(SPEAKER_VOICES)
    rng.shuffle(voices)
    utts = []
    k = 0
    for split in ("train", "dev", "test"):
        for _ in range(config.split_speakers.get(split, 0)):
            voice = voices[k]
            speaker = str(1001 + k)
            chapter = str(100 + k)
            k += 1
            for u in range(config.utts_per_speaker):
                utts.append(
                    Utterance(
                        utt_id=f"{speaker}-{chapter}-{u:04d}",
                        split=split,
                        speaker=speaker,
                        chapter=chapter,
                        voice=voice,
                        rate=rng.randint(*config.rate),
                        pitch=rng.randint(*config.pitch),
                        words=sentence(rng, config.min_words, config.max_words),
                    )
                )
    return utts


def make_mini_corpus(
    out_dir: str, config: Optional[MiniCorpusConfig] = None, jobs: int = 2, progress: bool = True
) -> Dict[str, object]:
    """Write the corpus under ``out_dir`` (see the module docstring) and return a summary.

    Writing goes to ``out_dir.tmp`` first and is renamed into place at the end, so an interrupted run
    leaves no half corpus behind; an existing complete corpus (``.done``) is kept.
    """
    import soundfile as sf
    from tqdm import tqdm

    config = config or MiniCorpusConfig()
    if not espeak_available():
        raise CorpusError("espeak-ng is not installed: apt-get install espeak-ng (make/tools/setup_env.sh does)")
    done = os.path.join(out_dir, ".done")
    if os.path.isfile(done):
        with open(done) as f:
            summary = json.load(f)
        if summary.get("config") == json.loads(json.dumps(asdict(config))):
            logger.info("%s: corpus already made, kept", out_dir)
            return summary
        raise CorpusError(f"{out_dir} holds a corpus made with another config; remove it or choose another --out")
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise CorpusError(f"{out_dir} exists and is not an unfinished mini corpus; remove it or choose another --out")
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    utts = plan(config)
    refs: Dict[str, List[dict]] = {s: [] for s in ("train", "dev", "test")}
    lexicon: Dict[str, set] = {}
    trans: Dict[str, List[str]] = {}

    def work(utt: Utterance):
        wav, words = render(utt, config)
        folder = os.path.join(tmp, "LibriSpeech", utt.split, utt.speaker, utt.chapter)
        os.makedirs(folder, exist_ok=True)
        sf.write(os.path.join(folder, f"{utt.utt_id}.flac"), wav, SAMPLE_RATE, subtype="PCM_16")
        return utt, wav.size / SAMPLE_RATE, words

    with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for utt, dur, words in tqdm(
            pool.map(work, utts),
            total=len(utts),
            desc="synthesising",
            disable=not progress,
            mininterval=1.0 if sys.stderr.isatty() else 15.0,
        ):
            refs[utt.split].append(
                {
                    "utt": utt.utt_id,
                    "speaker": utt.speaker,
                    "voice": utt.voice,
                    "rate": utt.rate,
                    "pitch": utt.pitch,
                    "duration": dur,
                    "words": words,
                }
            )
            key = os.path.join(
                tmp, "LibriSpeech", utt.split, utt.speaker, utt.chapter, f"{utt.speaker}-{utt.chapter}.trans.txt"
            )
            trans.setdefault(key, []).append(f"{utt.utt_id} {' '.join(utt.words).upper()}")
            for w in words:
                lexicon.setdefault(w["word"].upper(), set()).add(" ".join(w["phones"]))
    for path, lines in trans.items():
        with open(path, "w") as f:
            f.write("\n".join(sorted(lines)) + "\n")
    os.makedirs(os.path.join(tmp, "reference"), exist_ok=True)
    for split, items in refs.items():
        with open(os.path.join(tmp, "reference", f"{split}.jsonl"), "w") as f:
            for item in sorted(items, key=lambda r: r["utt"]):
                f.write(json.dumps(item) + "\n")
    with open(os.path.join(tmp, "lexicon.txt"), "w") as f:
        for word in sorted(lexicon):
            for pron in sorted(lexicon[word]):
                f.write(f"{word}\t{pron}\n")
    speakers = sorted({(u.speaker, u.split, u.voice) for u in utts})
    with open(os.path.join(tmp, "SPEAKERS.txt"), "w") as f:
        f.write(";ID |SUBSET| VOICE (espeak-ng)\n")
        for spk, split, voice in speakers:
            f.write(f"{spk} | {split} | {voice}\n")
    hours = {s: sum(r["duration"] for r in items) / 3600 for s, items in refs.items()}
    summary = {
        "config": json.loads(json.dumps(asdict(config))),
        "utterances": {s: len(items) for s, items in refs.items()},
        "hours": hours,
        "minutes_total": sum(hours.values()) * 60,
        "speakers": len(speakers),
        "words": len(lexicon),
    }
    publish(
        tmp,
        out_dir,
        "Synthetic English speech (espeak-ng) in LibriSpeech's layout, made by "
        "python -m s3prl_plugins.bin.make_mini_corpus. Word times in reference/*.jsonl are exact.\n",
        summary,
    )
    return summary


def publish(tmp: str, out_dir: str, readme: str, summary: Dict[str, object], replace: bool = False) -> None:
    """Finish a folder made under ``tmp``: write its README.txt and ``.done`` (the summary, which later
    runs compare their config with), then move it to ``out_dir``. An existing ``out_dir`` must be empty
    unless ``replace`` (a finished folder of ours made with another config)."""
    with open(os.path.join(tmp, "README.txt"), "w") as f:
        f.write(readme)
    with open(os.path.join(tmp, ".done"), "w") as f:
        json.dump(summary, f, indent=2)
    if os.path.isdir(out_dir):
        if replace:
            shutil.rmtree(out_dir)
        else:
            os.rmdir(out_dir)  # refuses (OSError) if anything appeared there meanwhile
    os.replace(tmp, out_dir)


def write_reference_phones(corpus_dir: str, split: str, data_dir: str) -> int:
    """Write ``data_dir/phones`` (``utt p p | p p ...``: espeak-ng phones, words separated by ``|``)
    from the corpus reference; returns the number of utterances written."""
    n = 0
    path = os.path.join(data_dir, "phones")
    with open(os.path.join(corpus_dir, "reference", f"{split}.jsonl")) as f, open(path + ".tmp", "w") as out:
        for line in f:
            ref = json.loads(line)
            out.write(ref["utt"] + " " + " | ".join(" ".join(w["phones"]) for w in ref["words"]) + "\n")
            n += 1
    os.replace(path + ".tmp", path)
    return n
