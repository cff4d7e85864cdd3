"""A small CTC phone model over frozen features: the phone-recognition probe (PER of an upstream's
features) and the acoustic model of our forced aligner.

Features come from :func:`extract_features`: ``fbank`` (40 log-Mel bins at 100 Hz, per-utterance
mean/variance normalised) or any checkpoint :func:`~s3prl_plugins.models.loading.load_pretrained`
reads (all hidden states, combined by learned softmax weights as in SUPERB). The model is a
LayerNorm + linear projection, a BiLSTM and a linear output over phones + blank (index 0); it trains
through the one :class:`~s3prl_plugins.train.Trainer`.
"""

from __future__ import annotations

import json
import logging
import os
import random
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_plugins.data.audio import load_audio
from s3prl_plugins.data.kaldi import read_data_dir
from s3prl_plugins.data.lexicon import BLANK, WORD_SEP, PhoneVocab, read_phones  # noqa: F401 - re-exported
from s3prl_plugins.nn.phone_ctc import PhoneCTC

logger = logging.getLogger(__name__)


class FeatureExtractor:
    """Frozen frame features of one waveform: (layers, frames, dim) and the frame shift in seconds.

    ``source`` is ``fbank`` (40 Kaldi log-Mel bins, 10 ms; normalised per utterance when ``cmvn``,
    which utterance-level probes turn off: it would erase the speaker's spectral mean) or anything
    :func:`load_pretrained` loads (all hidden states, at the encoder's rate: a subsampled model's
    subsampled states, as Meng et al. 2022 evaluate them), or an exported ``.onnx`` graph
    (:mod:`s3prl_plugins.deploy`, float32 or int8, run by onnxruntime: the probe of what is deployed).

    ``pool`` subsamples the features afterwards (Meng et al. 2022 Table 1): ``"avg:F"`` averages and
    ``"cat:F"`` concatenates every F frames. ``segmentation`` (``{utt: end frames}``) is what a
    ``segments``-topline model pools over (§5.3: the downstream task gets the forced alignments too).
    ``frames`` and ``seconds`` count what was extracted, for the average frame rate."""

    def __init__(
        self,
        source: str = "fbank",
        cmvn: bool = True,
        pool: Optional[str] = None,
        segmentation: Optional[Dict[str, List[int]]] = None,
    ):
        self.source = source
        self.cmvn = cmvn
        self.model = None
        self.onnx = None
        if str(source).endswith(".onnx"):
            from s3prl_plugins.upstream.onnx_expert import OnnxUpstreamExpert

            self.onnx = OnnxUpstreamExpert(ckpt=str(source))
        elif source != "fbank":
            from s3prl_plugins.models.loading import load_pretrained

            self.model = load_pretrained(source)
        if self.onnx is not None:
            self.frame_shift = self.onnx.downsample_rate / 16000
        else:
            self.frame_shift = (
                0.01
                if self.model is None
                else (self.model.config.encoder_downsample_rate or self.model.downsample_rate) / 16000
            )
        self.pool = None
        if pool:
            kind, _, n = str(pool).partition(":")
            if kind not in ("avg", "cat") or not n.isdigit() or int(n) < 1:
                raise ValueError(f"pool={pool!r}: expected 'avg:F' or 'cat:F' with F >= 1")
            self.pool = (kind, int(n))
            self.frame_shift *= int(n)
        sub = None if self.model is None else self.model.subsampler
        self.needs_segments = sub is not None and sub.kind == "segments"
        if self.needs_segments and segmentation is None:
            raise ValueError(f"{source}: a segments-topline model needs the test data's segmentation (--segmentation)")
        self.segmentation = segmentation
        self.frames, self.seconds = 0, 0.0

    @property
    def name(self) -> str:
        """A short label for progress bars and logs: ``log-Mel``, or the checkpoint's experiment
        folder (``exp/star_tiny/model.pt`` -> ``star_tiny``) or file name."""
        if self.model is None and self.onnx is None:
            return "log-Mel"
        src = str(self.source).rstrip("/")
        base = os.path.basename(src)
        return os.path.basename(os.path.dirname(src)) or base if base == "model.pt" else base

    @property
    def frame_rate(self) -> float:
        """Average frames per second of what was extracted so far."""
        return self.frames / self.seconds if self.seconds else 0.0

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.source!r}, cmvn={self.cmvn})"

    @torch.no_grad()
    def __call__(self, wav: Tensor, utt: Optional[str] = None) -> Tensor:
        if self.onnx is not None:
            feats = torch.stack([h[0] for h in self.onnx([wav])["hidden_states"]])
        elif self.model is None:
            import torchaudio

            f = torchaudio.compliance.kaldi.fbank(wav[None] * 32768, num_mel_bins=40, dither=0.0, energy_floor=0.0)
            if self.cmvn:
                f = (f - f.mean(0)) / f.std(0).clamp(min=1e-5)
            feats = f[None]
        else:
            kw = {}
            if self.needs_segments:
                from s3prl_plugins.segment.segmentation import segment_labels

                if utt not in self.segmentation:
                    raise ValueError(f"utterance {utt} has no segmentation (the topline model needs one)")
                kw["segment_ids"] = torch.tensor(segment_labels(self.segmentation[utt]))[None]
            out = self.model(wav[None], **kw)
            feats = torch.stack([h[0] for h in out.hidden_states])
        if self.pool is not None:
            from s3prl_plugins.nn.subsampling import average_pool, concat_pool

            fn = average_pool if self.pool[0] == "avg" else concat_pool
            feats = fn(feats, None, self.pool[1])[0]
        self.frames += feats.size(1)
        self.seconds += wav.numel() / 16000
        return feats


def extract_features(
    source: Union[str, "FeatureExtractor"], data_dir: str, progress: bool = True, utts: Optional[Sequence[str]] = None
) -> Tuple[Dict[str, Tensor], float]:
    """Features of the utterances of a data dir (all, or ``utts``), float16 ``(layers, frames, dim)``,
    and the frame shift. ``source``: a feature source or an extractor already built (to load a model
    once for several data dirs)."""
    from tqdm import tqdm

    ex = source if isinstance(source, FeatureExtractor) else FeatureExtractor(source)
    d = read_data_dir(data_dir)
    todo = d.utts if utts is None else list(utts)
    bar = tqdm(todo, desc=f"{ex.name} features of {data_dir}", unit="utt", disable=not progress, mininterval=10)
    feats = {utt: ex(load_audio(d.wav[utt]), utt).half() for utt in bar}
    return feats, ex.frame_shift


class FeatureDataset(torch.utils.data.Dataset):
    def __init__(self, feats: Dict[str, Tensor], targets: Dict[str, List[int]]):
        self.utts = sorted(u for u in feats if u in targets)
        self.feats, self.targets = feats, targets

    def __len__(self) -> int:
        return len(self.utts)

    def duration(self, i: int) -> float:
        return float(self.feats[self.utts[i]].size(1))

    def __getitem__(self, i: int):
        u = self.utts[i]
        return {"utt": u, "feats": self.feats[u], "targets": torch.tensor(self.targets[u], dtype=torch.long)}


def collate_features(items):
    L, D = items[0]["feats"].size(0), items[0]["feats"].size(2)
    T = max(it["feats"].size(1) for it in items)
    feats = torch.zeros(len(items), L, T, D, dtype=items[0]["feats"].dtype)
    for i, it in enumerate(items):
        feats[i, :, : it["feats"].size(1)] = it["feats"]
    return {
        "utts": [it["utt"] for it in items],
        "feats": feats,
        "lengths": torch.tensor([it["feats"].size(1) for it in items]),
        "targets": torch.cat([it["targets"] for it in items]),
        "target_lengths": torch.tensor([it["targets"].numel() for it in items]),
    }


class CTCTask(nn.Module):
    """CTC loss as a trainer task: ``reduction="sum"`` sums over the batch and divides by its labels;
    ``"mean"`` divides each utterance's loss by its own label count and averages utterances (PyTorch's
    ``CTCLoss`` default, which s3prl's ctc downstream uses)."""

    def __init__(self, model: PhoneCTC, reduction: str = "sum"):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be sum or mean, not {reduction!r}")
        self.model = model
        self.reduction = reduction

    def forward(self, batch):
        log_probs = self.model(batch["feats"], batch["lengths"])
        args = (log_probs.transpose(0, 1), batch["targets"], batch["lengths"], batch["target_lengths"])
        n = float(batch["target_lengths"].sum())
        if self.reduction == "mean":
            loss = F.ctc_loss(*args, blank=0, reduction="mean", zero_infinity=True)
            return loss, {"loss": (float(loss.detach()) * n, n)}
        loss = F.ctc_loss(*args, blank=0, reduction="sum", zero_infinity=True)
        return loss / n, {"loss": (float(loss.detach()), n)}


def greedy_decode(log_probs: Tensor, length: int, drop: Sequence[int] = ()) -> List[int]:
    """Best path, repeats merged, blanks (and the ids in ``drop``, e.g. an EOS class) removed."""
    ids = log_probs[:length].argmax(-1).tolist()
    out, prev = [], 0
    for i in ids:
        if i != prev and i != 0 and i not in drop:
            out.append(i)
        prev = i
    return out


@torch.no_grad()
def phone_error_rate(model: PhoneCTC, dataset: FeatureDataset, drop: Sequence[int] = ()) -> float:
    """Greedy-decoded phone error rate over ``dataset`` (one utterance at a time, no padding);
    ``drop``: output classes that are not phones (removed from hypotheses and references)."""
    import editdistance

    model.eval()
    errors = total = 0
    for i in range(len(dataset)):
        item = dataset[i]
        lp = model(item["feats"][None], torch.tensor([item["feats"].size(1)]))[0]
        hyp = greedy_decode(lp, item["feats"].size(1), drop)
        ref = [t for t in item["targets"].tolist() if t not in drop]
        errors += editdistance.eval(hyp, ref)
        total += len(ref)
    return errors / max(total, 1)


def train_phone_ctc(
    train: Tuple[Dict[str, torch.Tensor], Dict[str, List[int]]],
    valid: Optional[Tuple[Dict[str, torch.Tensor], Dict[str, List[int]]]],
    vocab_size: int,
    exp_dir: str,
    max_steps: int = 1500,
    batch_frames: float = 6000,
    lr: float = 2e-3,
    hidden: int = 256,
    seed: int = 0,
    dilations: Sequence[int] = (1, 2, 4, 8, 16, 1),
    layer_norm: bool = True,
    project_dim: int = 0,
    schedule: str = "cosine",
    clip_norm: float = 5.0,
    reduction: str = "sum",
    betas: Tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    batch_utts: int = 0,
    grad_accum: int = 1,
) -> PhoneCTC:
    """Train a :class:`PhoneCTC` on precomputed features through the shared trainer (``dilations=()``:
    a linear probe); 5% linear warm-up, then ``schedule``.

    Batches hold ``batch_frames`` padded frames of similar-length utterances, or, with ``batch_utts``,
    that many utterances of similar length (s3prl's bucketing); ``grad_accum`` batches per update."""
    from s3prl_plugins.data.dataset import BucketBatchSampler
    from s3prl_plugins.train.trainer import Trainer, TrainerConfig

    feats, targets = train
    example = next(iter(feats.values()))
    torch.manual_seed(seed)
    model = PhoneCTC(
        example.size(2),
        vocab_size,
        num_layers_in=example.size(0),
        hidden=hidden,
        dilations=dilations,
        layer_norm=layer_norm,
        project_dim=project_dim,
    )
    ds = FeatureDataset(feats, targets)
    if batch_utts:
        sampler = BucketBatchSampler(
            [ds.duration(i) for i in range(len(ds))], float("inf"), seed=seed, max_batch_size=batch_utts
        )
    else:
        sampler = BucketBatchSampler([ds.duration(i) for i in range(len(ds))], batch_frames, seed=seed)
    vdata = None
    if valid is not None:
        vds = FeatureDataset(*valid)
        vdata = (
            vds,
            BucketBatchSampler([vds.duration(i) for i in range(len(vds))], batch_frames, shuffle=False),
            collate_features,
        )
    cfg = TrainerConfig(
        exp_dir=exp_dir,
        max_steps=max_steps,
        lr=lr,
        warmup_steps=max_steps // 20,
        schedule=schedule,
        betas=betas,
        eps=eps,
        grad_accum=grad_accum,
        log_every=50,
        valid_every=max(max_steps // 3, 1),
        save_every=max(max_steps // 3, 1),
        clip_norm=clip_norm,
        seed=seed,
    )
    Trainer(cfg, CTCTask(model, reduction), (ds, sampler, collate_features), vdata).train()
    return model.eval()


PROBES = {
    "linear": dict(dilations=(), lr=0.02),
    "conv": dict(dilations=(1, 2, 4, 8, 16, 1), lr=2e-3),
    # s3prl's SUPERB PR training as superb_prepare writes its config, to compare with the stock runner: no
    # layer norm, a 256-d projection, torch's Adam (1e-2, betas 0.9/0.999, eps 1e-8) with linear warm-up (5%)
    # and decay, clipping at 1, CTC's per-utterance mean, batches of 16 similar-length utterances x 2
    # accumulated, and an <eos> label ending every target (s3prl's word tokenizer)
    "superb": dict(
        dilations=(),
        lr=1e-2,
        layer_norm=False,
        project_dim=256,
        schedule="linear",
        clip_norm=1.0,
        reduction="mean",
        betas=(0.9, 0.999),
        eps=1e-8,
        batch_utts=16,
        grad_accum=2,
        eos=True,
    ),
}


def run_probe(
    features: str,
    train_dir: str,
    test_dir: str,
    out: str,
    max_steps: int = 5000,
    valid_dir: str = None,
    max_train_utts: int = 0,
    probe: str = "linear",
    pool: str = None,
    segmentation=None,
    seed: int = 0,
) -> dict:
    """Train the probe on ``train_dir`` (its first ``max_train_utts`` utterances with phones, in a
    seeded random order, when given: features of a large corpus are kept in memory) and score ``test_dir``.

    ``pool`` (``avg:F`` / ``cat:F``) subsamples the features first (Meng et al. 2022 Table 1);
    ``segmentation`` (.seg files of the data dirs) is for a segments-topline model. ``seed``: the probe's
    initialisation, batch order and training subset (the features are the model's, whatever the seed): probes of
    a few seeds give the spread a PER is read against."""
    train_phones = read_phones(os.path.join(train_dir, "phones"))
    if max_train_utts and len(train_phones) > max_train_utts:
        keep = sorted(train_phones)
        random.Random(seed).shuffle(keep)
        train_phones = {u: train_phones[u] for u in sorted(keep[:max_train_utts])}
    vocab = PhoneVocab([ph for ws in train_phones.values() for w in ws for ph in w])

    if probe not in PROBES:
        raise ValueError(f"--probe must be one of {sorted(PROBES)}, not {probe!r}")
    settings = dict(PROBES[probe])
    # s3prl's word tokenizer ends every PR label sequence in <eos>, a class its CTC head must emit;
    # it is dropped before scoring (s3prl/downstream/ctc: WordTextEncoder.encode, expert.forward)
    eos = [len(vocab)] if settings.pop("eos", False) else []

    def targets(phones):
        return {
            u: vocab.encode([p for w in ws for p in w]) + eos
            for u, ws in phones.items()
            if all(p in vocab.index for w in ws for p in w)
        }

    seg = None
    if segmentation:
        from s3prl_plugins.segment.segmentation import read_segmentation

        seg = {}
        for path in segmentation:
            seg.update(read_segmentation(path))
    ex = FeatureExtractor(features, pool=pool, segmentation=seg)  # the model is loaded once for every data dir
    feats, shift = extract_features(ex, train_dir, utts=sorted(train_phones))
    valid = None
    if valid_dir:
        valid = (extract_features(ex, valid_dir)[0], targets(read_phones(os.path.join(valid_dir, "phones"))))
    model = train_phone_ctc(
        (feats, targets(train_phones)),
        valid,
        len(vocab) + len(eos),
        os.path.join(out, "model"),
        max_steps=max_steps,
        seed=seed,
        **settings,
    )
    ex.frames, ex.seconds = 0, 0.0  # the frame rate of the test set
    test_feats, _ = extract_features(ex, test_dir)
    per = phone_error_rate(
        model, FeatureDataset(test_feats, targets(read_phones(os.path.join(test_dir, "phones")))), drop=eos
    )
    result = {
        "features": features,
        "frame_shift": shift,
        "test": test_dir,
        "per": per,
        "steps": max_steps,
        "seed": seed,
        "train_utts": len(feats),
        "probe": probe,
        "pool": pool,
        "frame_rate_hz": round(ex.frame_rate, 3),
        "layer_weights": [round(w, 4) for w in torch.softmax(model.layer_weights.detach(), 0).tolist()],
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result
