"""Montreal Forced Aligner: the real ``mfa align`` when it is installed and working.

MFA's Kaldi bindings come only from conda; the PyPI package installs but every ``mfa`` command fails
(``No module named '_kalpy'``). :func:`mfa_status` says which case holds so the recipe can fall back to
our CTC aligner explicitly (and say so).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import List, Optional, Tuple


def mfa_status(executable: str = "mfa") -> Tuple[bool, str]:
    """``(usable, reason)``: whether ``mfa`` runs here."""
    path = shutil.which(executable)
    if path is None:
        return (
            False,
            f"{executable} is not on PATH "
            "(install MFA with conda: conda install -c conda-forge montreal-forced-aligner)",
        )
    try:
        r = subprocess.run([path, "version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{path} version failed: {e}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return False, f"{path} version exited {r.returncode}: {tail[0]}"
    return True, r.stdout.strip()


def mfa_align_command(
    corpus_dir: str,
    dictionary: str,
    acoustic_model: str,
    out_dir: str,
    jobs: int = 2,
    extra: Optional[List[str]] = None,
) -> List[str]:
    """The ``mfa align`` command line (corpus of .flac/.wav with .lab/.txt transcripts beside them)."""
    return [
        "mfa",
        "align",
        corpus_dir,
        dictionary,
        acoustic_model,
        out_dir,
        "--clean",
        "--num_jobs",
        str(jobs),
        "--output_format",
        "long_textgrid",
        *(extra or []),
    ]


def prepare_mfa_corpus(data_dir: str, out_dir: str) -> int:
    """Lay a Kaldi data dir out as MFA expects: ``out_dir/<speaker>/<utt>.<ext>`` (a link to the audio)
    beside ``<utt>.lab`` (the transcript). Returns the number of utterances."""
    from s3prl_plugins.data.kaldi import read_data_dir

    d = read_data_dir(data_dir)
    if not d.text:
        raise ValueError(f"{data_dir}: no text file; MFA needs transcripts")
    for utt in d.utts:
        folder = os.path.join(out_dir, d.utt2spk[utt])
        os.makedirs(folder, exist_ok=True)
        ext = os.path.splitext(d.wav[utt])[1] or ".wav"
        link = os.path.join(folder, utt + ext)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(d.wav[utt]), link)
        with open(os.path.join(folder, utt + ".lab"), "w") as f:
            f.write(d.text[utt] + "\n")
    return len(d.utts)


def collect_textgrids(mfa_out: str, out_dir: str) -> List[str]:
    """Move MFA's ``<speaker>/<utt>.TextGrid`` files to ``out_dir/<utt>.TextGrid`` (our layout)."""
    os.makedirs(out_dir, exist_ok=True)
    moved = []
    for root, _, files in os.walk(mfa_out):
        for name in files:
            if name.endswith(".TextGrid"):
                os.replace(os.path.join(root, name), os.path.join(out_dir, name))
                moved.append(name[: -len(".TextGrid")])
    return sorted(moved)


def run_mfa(data_dir: str, dictionary: str, acoustic_model: str, out_dir: str, jobs: int = 2) -> List[str]:
    """Align a data dir with the real ``mfa align``; TextGrids end up in ``out_dir/<utt>.TextGrid`` and
    utterances MFA did not align are listed in ``out_dir/failed.txt``. Returns the aligned ids."""
    from s3prl_plugins.data.kaldi import read_data_dir

    ok, reason = mfa_status()
    if not ok:
        raise RuntimeError(f"MFA is not usable here: {reason}")
    work = out_dir.rstrip("/") + ".mfa"
    prepare_mfa_corpus(data_dir, os.path.join(work, "corpus"))
    subprocess.run(
        mfa_align_command(os.path.join(work, "corpus"), dictionary, acoustic_model, os.path.join(work, "out"), jobs),
        check=True,
    )
    aligned = collect_textgrids(os.path.join(work, "out"), out_dir)
    missing = sorted(set(read_data_dir(data_dir).utts) - set(aligned))
    with open(os.path.join(out_dir, "failed.txt"), "w") as f:
        for utt in missing:
            f.write(f"{utt} not aligned by MFA (see {work}/out for its logs)\n")
    return aligned
