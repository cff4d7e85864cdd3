"""Montreal Forced Aligner: the real ``mfa align`` when it is installed and working.

MFA's Kaldi bindings come only from conda; the PyPI package installs but every ``mfa`` command fails
(``No module named '_kalpy'``). :func:`mfa_status` says which case holds so the recipe can fall back to
our CTC aligner explicitly (and say so).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import List, Optional, Tuple


def mfa_status(executable: str = "mfa") -> Tuple[bool, str]:
    """``(usable, reason)``: whether ``mfa`` runs here."""
    path = shutil.which(executable)
    if path is None:
        return False, f"{executable} is not on PATH (install MFA with conda: conda install -c conda-forge montreal-forced-aligner)"
    try:
        r = subprocess.run([path, "version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{path} version failed: {e}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return False, f"{path} version exited {r.returncode}: {tail[0]}"
    return True, r.stdout.strip()


def mfa_align_command(corpus_dir: str, dictionary: str, acoustic_model: str, out_dir: str, jobs: int = 2, extra: Optional[List[str]] = None) -> List[str]:
    """The ``mfa align`` command line (corpus of .flac/.wav with .lab/.txt transcripts beside them)."""
    return ["mfa", "align", corpus_dir, dictionary, acoustic_model, out_dir, "--clean", "--num_jobs", str(jobs), "--output_format", "long_textgrid", *(extra or [])]


def run_mfa(corpus_dir: str, dictionary: str, acoustic_model: str, out_dir: str, jobs: int = 2) -> None:
    ok, reason = mfa_status()
    if not ok:
        raise RuntimeError(f"MFA is not usable here: {reason}")
    subprocess.run(mfa_align_command(corpus_dir, dictionary, acoustic_model, out_dir, jobs), check=True)
