"""Kaldi data directories: ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``utt2dur`` -- read, written
atomically, and validated (the same checks as Kaldi's ``utils/validate_data_dir.sh`` that matter here).

``wav.scp`` holds plain audio paths (any format libsndfile reads, FLAC included) rather than Kaldi's
``flac -c -d -s path |`` pipes: our one audio loader reads them directly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional


class DataDirError(ValueError):
    """A data directory that is inconsistent or names missing files."""


@dataclass
class DataDir:
    """An in-memory Kaldi data directory (utterance ids sorted)."""

    wav: Dict[str, str] = field(default_factory=dict)
    text: Dict[str, str] = field(default_factory=dict)
    utt2spk: Dict[str, str] = field(default_factory=dict)
    utt2dur: Dict[str, float] = field(default_factory=dict)

    @property
    def utts(self) -> List[str]:
        return sorted(self.wav)

    @property
    def spk2utt(self) -> Dict[str, List[str]]:
        out: Dict[str, List[str]] = {}
        for utt in self.utts:
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return out

    def subset(self, utts) -> "DataDir":
        keep = set(utts)
        return DataDir(
            {u: p for u, p in self.wav.items() if u in keep},
            {u: t for u, t in self.text.items() if u in keep},
            {u: s for u, s in self.utt2spk.items() if u in keep},
            {u: d for u, d in self.utt2dur.items() if u in keep},
        )


def read_table(path: str, required: bool = True) -> Dict[str, str]:
    """A Kaldi table (``key value...`` per line: wav.scp, text, utt2spk, hypotheses); duplicate keys refused."""
    if not os.path.isfile(path):
        if required:
            raise DataDirError(f"{path}: missing")
        return {}
    out: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, _, value = line.partition(" ")
            if key in out:
                raise DataDirError(f"{path}:{lineno}: duplicate key {key}")
            out[key] = value.strip()
    return out


def read_data_dir(path: str, check_files: bool = True) -> DataDir:
    """Read and validate a data directory."""
    if not os.path.isdir(path):
        raise DataDirError(f"{path}: no such data directory")
    d = DataDir(
        wav=read_table(os.path.join(path, "wav.scp")),
        text=read_table(os.path.join(path, "text"), required=False),
        utt2spk=read_table(os.path.join(path, "utt2spk")),
        utt2dur={k: float(v) for k, v in read_table(os.path.join(path, "utt2dur"), required=False).items()},
    )
    validate(d, path, check_files)
    return d


def validate(d: DataDir, name: str = "data dir", check_files: bool = True) -> None:
    """Raise :class:`DataDirError` naming the first problem."""
    if not d.wav:
        raise DataDirError(f"{name}: no utterances")
    utts = set(d.wav)
    for table, label in ((d.utt2spk, "utt2spk"), (d.text, "text"), (d.utt2dur, "utt2dur")):
        if label != "utt2spk" and not table:
            continue
        if set(table) != utts:
            missing = sorted(utts - set(table))[:3]
            extra = sorted(set(table) - utts)[:3]
            raise DataDirError(f"{name}: {label} and wav.scp disagree (missing {missing}, extra {extra})")
    for utt, spk in d.utt2spk.items():
        if not utt.startswith(spk):
            raise DataDirError(f"{name}: utterance {utt} does not start with its speaker id {spk} (Kaldi sorting rule)")
    for utt, dur in d.utt2dur.items():
        if not dur > 0:
            raise DataDirError(f"{name}: utterance {utt} has duration {dur}")
    if check_files:
        for utt, path in d.wav.items():
            if not os.path.isfile(path):
                raise DataDirError(f"{name}: wav.scp names a missing file for {utt}: {path}")


DIR_MARKER = ".s3prl_plugins"  # in every folder atomic_dir builds: the one kind of non-empty folder it replaces
KALDI_FILES = frozenset(
    {"wav.scp", "utt2spk", "spk2utt", "text", "utt2dur", "segments", "reco2dur", "feats.scp", "cmvn.scp", "phones"}
)


class NotOurFolder(DataDirError):
    """A command was asked to replace a folder that holds files it did not write."""


def check_replaceable(path: str, legacy: frozenset = frozenset()) -> None:
    """Refuse ``path`` unless it is absent or holds only what :func:`atomic_dir` wrote there (the names its
    :data:`DIR_MARKER` lists) and ``legacy`` names (what the builder writes, and folders of before the marker
    hold). Nothing is written."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        raise NotOurFolder(f"{path} exists and is not a folder; choose another output")
    found = sorted(os.listdir(path))
    ours = set(legacy)  # what the builder writes, and what our other commands add (a data dir's phones)
    if DIR_MARKER in found:  # ours: it lists what it wrote; anything else added since is somebody's
        with open(os.path.join(path, DIR_MARKER), encoding="utf-8") as f:
            ours |= {DIR_MARKER, *f.read().split()}
    foreign = [n for n in found if n not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise NotOurFolder(
            f"{path} holds files this command did not write ({shown}); it replaces only an empty folder or one it "
            "wrote. Move them out or choose another output folder; nothing was changed"
        )


@contextlib.contextmanager
def atomic_dir(path: str, legacy: frozenset = frozenset()):
    """Build a folder atomically: yields a fresh temporary folder beside ``path``, which replaces ``path`` when
    the block succeeds and is removed when it raises -- a failure leaves neither a half-written folder nor the
    old one touched. ``path`` must be absent, empty or one this function built (:func:`check_replaceable`,
    checked before the block runs and again before the replacement): nothing of anyone else's is deleted."""
    path = path.rstrip("/")
    check_replaceable(path, legacy)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    from s3prl_plugins.models.checkpoint import current_umask

    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide a shared data dir from colleagues
    try:
        yield tmp
        with open(os.path.join(tmp, DIR_MARKER), "w", encoding="utf-8") as f:  # what it wrote (one name a line)
            f.write("".join(f"{n}\n" for n in sorted(os.listdir(tmp))))
        check_replaceable(path, legacy)
        if os.path.isdir(path):  # ours (or empty): out of the way, removed once the new one is in place
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.replace(path, os.path.join(old, "d"))
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_data_dir(d: DataDir, path: str) -> None:
    """Validate, then write ``path`` atomically (a temporary folder renamed into place)."""
    validate(d, path, check_files=False)
    with atomic_dir(path, legacy=KALDI_FILES) as tmp:
        _dump_data_dir(d, tmp)


def _dump_data_dir(d: DataDir, tmp: str) -> None:
    def dump(name: str, rows):
        with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
            for key, value in rows:
                f.write(f"{key} {value}\n")

    utts = d.utts
    dump("wav.scp", ((u, d.wav[u]) for u in utts))
    dump("utt2spk", ((u, d.utt2spk[u]) for u in utts))
    dump("spk2utt", ((s, " ".join(us)) for s, us in sorted(d.spk2utt.items())))
    if d.text:
        dump("text", ((u, d.text[u]) for u in utts))
    if d.utt2dur:
        dump("utt2dur", ((u, f"{d.utt2dur[u]:.4f}") for u in utts))


def combine_data_dirs(dirs: List[str], check_files: bool = True) -> DataDir:
    """The union of several data dirs (Kaldi's ``combine_data.sh``); an utterance id found in two of
    them raises :class:`DataDirError` naming both."""
    out = DataDir()
    origin: Dict[str, str] = {}
    for path in dirs:
        d = read_data_dir(path, check_files=check_files)
        for utt in d.utts:
            if utt in origin:
                raise DataDirError(
                    f"utterance {utt} is in both {origin[utt]} and {path}: ids must be unique to combine"
                )
            origin[utt] = path
        out.wav.update(d.wav)
        out.text.update(d.text)
        out.utt2spk.update(d.utt2spk)
        out.utt2dur.update(d.utt2dur)
    # an optional table that only some inputs have would be half-filled: leave it out, as Kaldi does
    if len(out.text) != len(out.wav):
        out.text = {}
    if len(out.utt2dur) != len(out.wav):
        out.utt2dur = {}
    return out


def read_list(path: Optional[str]) -> List[str]:
    if not path or not os.path.isfile(path):
        return []
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]
