"""A tiny data dir with frame labels, built by tests (tones and noise; no espeak needed)."""

import os

import numpy as np
import soundfile as sf

from s3prl_plugins.data.dataset import write_labels
from s3prl_plugins.data.kaldi import DataDir, write_data_dir


def make_tiny_data(root, n_utts=12, seconds=(0.6, 1.4), stride=320, classes=8, seed=0):
    rng = np.random.default_rng(seed)
    d = DataDir()
    labels = {}
    os.makedirs(os.path.join(root, "audio"), exist_ok=True)
    for i in range(n_utts):
        spk = f"s{i % 3}"
        utt = f"{spk}-u{i:03d}"
        n = int(rng.uniform(*seconds) * 16000)
        t = np.arange(n) / 16000
        # segments of 3 frames, each a tone whose class steps up by one: labels follow the audio and
        # masked frames are predictable from their context
        first = int(rng.integers(classes))
        seg = np.arange(n) // (3 * stride)
        freq = 150.0 * 1.3 ** ((first + seg) % classes)
        wav = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
        path = os.path.join(root, "audio", utt + ".wav")
        sf.write(path, wav.astype("float32"), 16000)
        d.wav[utt], d.utt2spk[utt], d.utt2dur[utt], d.text[utt] = path, spk, n / 16000, "A B"
        frames = (n - 400) // stride + 1
        centre = np.arange(frames) * stride + 200
        labels[utt] = ((first + centre // (3 * stride)) % classes).tolist()
    write_data_dir(d, os.path.join(root, "data"))
    write_labels(os.path.join(root, "labels.km"), labels)
    return os.path.join(root, "data"), os.path.join(root, "labels.km")


def labelled_data(data_dir, labels, batch_seconds):
    """The data section of a masked-prediction run on the tiny data: train = valid, their k-means codes, 1 s crops."""
    return {
        "train": data_dir,
        "valid": data_dir,
        "train_labels": labels,
        "valid_labels": labels,
        "max_seconds": 1.0,
        "batch_seconds": batch_seconds,
    }


def tiny_pretrain_config(root, data_dir, labels, **trainer):
    t = dict(
        exp_dir=os.path.join(root, "exp"),
        max_steps=6,
        lr=1e-3,
        warmup_steps=2,
        log_every=2,
        valid_every=3,
        save_every=2,
        seed=0,
        dropout=None,
    )
    t.pop("dropout")
    t.update(trainer)
    return {
        "model": {
            "factory": "hubert_config",
            "args": dict(
                embed_dim=32,
                num_layers=2,
                num_heads=4,
                ffn_dim=64,
                final_dim=16,
                num_classes=[8],
                conv_layers=[[32, 10, 5], [32, 8, 4], [32, 4, 4], [32, 4, 4]],
                pos_conv_kernel=8,
                pos_conv_groups=4,
            ),
        },
        "data": labelled_data(data_dir, labels, batch_seconds=3.0),
        "task": {"mask_prob": 0.1, "mask_length": 3},
        "trainer": t,
    }


TINY_CONV = [[32, 10, 5], [32, 8, 4], [32, 4, 4], [32, 4, 4]]


def make_tiny_teacher(path, num_layers=2, seed=0):
    """A randomly initialised tiny HuBERT saved in our checkpoint format (a stand-in teacher)."""
    import torch

    from s3prl_plugins.models.checkpoint import save_checkpoint
    from s3prl_plugins.models.factories import hubert_config
    from s3prl_plugins.models.ssl_model import SSLModel

    torch.manual_seed(seed)
    cfg = hubert_config(
        embed_dim=32,
        num_layers=num_layers,
        num_heads=4,
        ffn_dim=64,
        with_head=False,
        conv_layers=[tuple(c) for c in TINY_CONV],
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    save_checkpoint(path, SSLModel(cfg))
    return path


TINY_STUDENT_CONV = [(16, 10, 5), (16, 8, 4), (16, 4, 4), (16, 4, 4)]  # 320 samples per frame, as the teacher


def tiny_student(subsampling=None, head=True):
    """A one-layer student of :func:`make_tiny_teacher`'s frame rate (width 16), with DistilHuBERT heads
    predicting the teacher's layers 1 and 2 at its width 32 unless ``head`` is false."""
    from s3prl_plugins.models.config import SSLModelConfig
    from s3prl_plugins.models.ssl_model import SSLModel

    return SSLModel(
        SSLModelConfig(
            conv_layers=TINY_STUDENT_CONV,
            conv_norm="layer_norm",
            feature_layer_norm=False,
            embed_dim=16,
            num_layers=1,
            num_heads=[2],
            head_dim=8,
            ffn_dims=[32],
            pos_conv_kernel=8,
            pos_conv_groups=4,
            subsampling=subsampling,
            head={"type": "distil", "layers": [1, 2], "out_dim": 32} if head else None,
        )
    )


def tiny_distill_config(root, data_dir, teacher, objectives=None, student_layers=2, **trainer):
    t = dict(
        exp_dir=os.path.join(root, "exp"),
        max_steps=6,
        lr=1e-3,
        warmup_steps=2,
        log_every=2,
        valid_every=3,
        save_every=2,
        seed=0,
        schedule="cosine",
    )
    t.update(trainer)
    return {
        "teacher": {"source": teacher},
        "student": {
            "factory": "star_hubert_config",
            "args": dict(
                embed_dim=16,
                num_layers=student_layers,
                num_heads=2,
                ffn_dim=32,
                conv_layers=[[16, 10, 5], [16, 8, 4], [16, 4, 4], [16, 4, 4]],
                pos_conv_kernel=8,
                pos_conv_groups=4,
            ),
        },
        "objectives": objectives or {"layer_wise": 1.0, "intra_layer": 1.0},
        "data": {"train": data_dir, "valid": data_dir, "max_seconds": 1.0, "batch_seconds": 3.0},
        "trainer": t,
    }


def tiny_chain_config(model, data_dir, labels, exp_dir, steps, measure=None):
    """A compression chain (compress.pipeline) on the tiny data: the model's masked-prediction loss, 1 s crops,
    a few updates per recovery; ``measure`` as bin/compress takes it (None: the chain's own statistics only)."""
    config = {
        "model": model,
        "objective": {"type": "masked_prediction", "mask_prob": 0.1, "mask_length": 3, "unmasked_weight": 1.0},
        "data": labelled_data(data_dir, labels, batch_seconds=4.0),
        "trainer": {"lr": 1e-3, "log_every": 1, "save_every": 2},
        "exp_dir": str(exp_dir),
        "steps": steps,
    }
    if measure is not None:
        config["measure"] = measure
    return config


def librispeech_layout(root, utts, subset="train-clean-100"):
    """A LibriSpeech-layout corpus under ``root/subset``; utts: {utt_id: (seconds or None for no file or 'corrupt',
    transcript or None)}"""
    by_chapter = {}
    for utt, (sec, text) in utts.items():
        spk, ch, _ = utt.split("-")
        folder = root / subset / spk / ch
        folder.mkdir(parents=True, exist_ok=True)
        if sec == "corrupt":
            (folder / f"{utt}.flac").write_bytes(b"fLaC garbage")
        elif sec is not None:
            sf.write(
                folder / f"{utt}.flac",
                (np.random.default_rng(0).standard_normal(int(sec * 16000)) * 0.1).astype("float32"),
                16000,
            )
        if text is not None:
            by_chapter.setdefault((spk, ch), []).append(f"{utt} {text}")
    for (spk, ch), lines in by_chapter.items():
        (root / subset / spk / ch / f"{spk}-{ch}.trans.txt").write_text("\n".join(lines) + "\n")
