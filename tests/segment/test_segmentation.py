"""Segmentations (segment/segmentation.py, segment/dp.py, bin/segment): the file format and its
checks, TextGrid boundaries, the DP against a brute force over every segmentation, the lambda sweep,
and distillation with a segmentation through run_distill (CIF guidance, the segments topline)."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tiny_data import make_tiny_data, make_tiny_teacher, tiny_distill_config

from s3prl_plugins.segment.dp import PenaltySearchError, dp_segment, find_penalty, rate_of, segment_all, smoothed_codes
from s3prl_plugins.segment.segmentation import (
    SegmentationError,
    average_rate,
    check_against_audio,
    expected_frames,
    from_intervals,
    from_textgrids,
    read_segmentation,
    segment_labels,
    write_segmentation,
)
from s3prl_plugins.segment.textgrid import write_textgrid


def test_write_read_roundtrip_and_info(tmp_path):
    seg = {"a": [3, 5, 9], "b": [1, 2]}
    path = str(tmp_path / "train.seg")
    write_segmentation(path, seg, {"source": "test"})
    assert read_segmentation(path) == seg
    assert open(path).read().splitlines()[0] == "a 9 3 5 9"
    assert json.load(open(tmp_path / "info.json"))["train.seg"]["source"] == "test"
    assert average_rate(seg) == pytest.approx(5 / 11 * 50)


@pytest.mark.parametrize(
    "line,match",
    [
        ("u1 9 3 3 9", "zero-length"),
        ("u1 9 3 5 8", "must cover"),
        ("u1 9 5 3 9", "zero-length or out-of-order"),
        ("u1 nine 3", "integers"),
        ("u1 0", "no segments"),
    ],
)
def test_bad_lines_are_refused_naming_file_line_and_utterance(tmp_path, line, match):
    path = tmp_path / "x.seg"
    path.write_text("u0 4 2 4\n" + line + "\n")
    with pytest.raises(SegmentationError, match=match) as e:
        read_segmentation(str(path))
    assert "x.seg:2" in str(e.value)
    if "integers" not in match:
        assert "u1" in str(e.value)


def test_nothing_half_written_on_a_bad_segmentation(tmp_path):
    path = tmp_path / "y.seg"
    with pytest.raises(SegmentationError, match="zero-length"):
        write_segmentation(str(path), {"ok": [2, 4], "bad": [2, 2, 4]})
    assert not path.exists()


def test_segment_labels_fit_other_frame_counts():
    assert segment_labels([2, 5]) == [0, 0, 1, 1, 1]
    assert segment_labels([2, 5], 7) == [0, 0, 1, 1, 1, 1, 1]
    assert segment_labels([2, 5], 4) == [0, 0, 1, 1]


def test_intervals_to_boundaries():
    # phones at 0.00-0.10, 0.10-0.11 (rounds to zero frames: merged), 0.11-0.30, silence, 0.40-0.50
    iv = [(0.0, 0.10, "a"), (0.10, 0.11, "b"), (0.11, 0.30, "c"), (0.40, 0.50, "d")]
    assert from_intervals(iv, 30) == [5, 6, 15, 20, 25, 30]  # gaps (silence, trailing audio) are segments


def test_textgrids_to_segmentation_and_mismatches(tmp_path):
    data, _ = make_tiny_data(str(tmp_path), n_utts=3)
    from s3prl_plugins.data.kaldi import read_data_dir

    d = read_data_dir(data)
    tg = tmp_path / "tg"
    u0, u1, u2 = d.utts
    dur = d.utt2dur[u0]
    write_textgrid(str(tg / f"{u0}.TextGrid"), {"phones": [(0.0, 0.2, "a"), (0.2, dur, "b")]}, dur)
    write_textgrid(str(tg / f"{u1}.TextGrid"), {"phones": [(0.0, d.utt2dur[u1], "a")]}, d.utt2dur[u1])
    res = from_textgrids(data, str(tg))
    assert res["missing"] == [u2]
    assert res["segmentation"][u0][0] == 10 and res["segmentation"][u0][-1] == expected_frames(int(round(dur * 16000)))
    assert check_against_audio(res["segmentation"], data) == [u2]
    write_textgrid(str(tg / f"{u2}.TextGrid"), {"phones": [(0.0, d.utt2dur[u2] + 1.0, "a")]}, d.utt2dur[u2] + 1.0)
    with pytest.raises(SegmentationError, match=f"{u2}.TextGrid: the alignment ends"):
        from_textgrids(data, str(tg))
    bad = dict(res["segmentation"])
    bad[u1] = [bad[u1][-1] + 10]
    with pytest.raises(SegmentationError, match=f"utterance {u1}: the segmentation covers"):
        check_against_audio(bad, data)


def _brute_force(x, codebook, penalty):
    """Every segmentation of a short sequence, each segment with its best code."""
    T = len(x)
    d = ((x[:, None, :] - codebook[None]) ** 2).sum(-1)
    best = None
    for cuts in itertools.product([0, 1], repeat=T - 1):
        ends = [t + 1 for t, c in enumerate(cuts) if c] + [T]
        cost, prev = 0.0, 0
        for e in ends:
            cost += d[prev:e].sum(0).min() + penalty * (1 - (e - prev))
            prev = e
        if best is None or cost < best[0] - 1e-9:
            best = (cost, ends)
    return best


@pytest.mark.parametrize("penalty", [0.0, 0.5, 2.0, 8.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_dp_equals_brute_force(penalty, seed):
    rng = np.random.default_rng(seed)
    codebook = rng.normal(size=(4, 3))
    x = codebook[rng.integers(0, 4, size=9)] + 0.6 * rng.normal(size=(9, 3))
    ends, codes = dp_segment(x, codebook, penalty)
    cost, ref = _brute_force(x, codebook, penalty)
    d = ((x[:, None, :] - codebook[None]) ** 2).sum(-1)
    ours, prev = 0.0, 0
    for e, c in zip(ends, codes):
        ours += d[prev:e, c].sum() + penalty * (1 - (e - prev))
        prev = e
    assert ours == pytest.approx(cost, abs=1e-9)
    if penalty == 0.0:  # ties go to longer segments: runs of one code are one segment
        assert all(a != b for a, b in zip(codes, codes[1:]))
    assert len(smoothed_codes(ends, codes)) == 9


def test_penalty_lowers_the_rate_and_the_sweep_finds_a_target():
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(8, 4))
    feats = {f"u{i}": codebook[rng.integers(0, 8, size=120)] + 0.8 * rng.normal(size=(120, 4)) for i in range(6)}
    rates = [rate_of(segment_all(feats, codebook, lam)[0], 50.0) for lam in (0.0, 2.0, 8.0, 32.0)]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]
    found = find_penalty(feats, codebook, 12.5)
    assert found["rate"] == pytest.approx(12.5, rel=0.02) and found["penalty"] > 0
    with pytest.raises(PenaltySearchError, match="above what the programme gives"):
        find_penalty(feats, codebook, 60.0)
    with pytest.raises(PenaltySearchError, match="raise max_length"):
        find_penalty(feats, codebook, 0.5, max_length=20)


def test_dp_refuses_bad_input():
    with pytest.raises(ValueError, match="no frames"):
        dp_segment(np.zeros((0, 2)), np.zeros((2, 2)), 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        dp_segment(np.zeros((3, 2)), np.zeros((2, 2)), -1.0)
    with pytest.raises(ValueError, match="utterance u9"):
        segment_all({"u9": np.zeros((0, 2))}, np.zeros((2, 2)), 1.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    data, _ = make_tiny_data(str(root))
    teacher = make_tiny_teacher(str(root / "teacher.pt"))
    return root, data, teacher


def test_segment_cli_dp_and_textgrid(tiny, tmp_path):
    root, data, teacher = tiny
    out = tmp_path / "dp"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3prl_plugins.bin.segment",
            "dp",
            "--train",
            data,
            "--ckpt",
            teacher,
            "--layer",
            "1",
            "--clusters",
            "8",
            "--target-rate",
            "20",
            "--sweep-utts",
            "12",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["rate_hz_data"] == pytest.approx(20, rel=0.1) and info["penalty"] >= 0
    seg = read_segmentation(str(out / "data.seg"))
    assert check_against_audio(seg, data) == []
    assert (out / "data.codes").exists() and (out / "centroids.npy").exists()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3prl_plugins.bin.segment",
            "dp",
            "--train",
            data,
            "--ckpt",
            teacher,
            "--layer",
            "1",
            "--clusters",
            "8",
            "--target-rate",
            "200",
            "--out",
            str(tmp_path / "bad"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "above what the programme gives" in bad.stderr
    empty = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3prl_plugins.bin.segment",
            "textgrid",
            "--data",
            data,
            "--textgrids",
            str(tmp_path),
            "--out",
            str(tmp_path / "p.seg"),
        ],
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 2 and "no TextGrid" in empty.stderr


def _uniform_segmentation(data, path, size=3):
    from s3prl_plugins.data.kaldi import read_data_dir

    d = read_data_dir(data)
    seg = {}
    for u in d.utts:
        n = expected_frames(int(round(d.utt2dur[u] * 16000)))
        seg[u] = list(range(size, n, size)) + [n]
    write_segmentation(path, seg)
    return path


@pytest.mark.parametrize(
    "spec,objectives",
    [
        ({"type": "cif", "stride": 3}, {"l1_cos": 1.0, "segment": 0.005, "frame": 0.25}),
        ({"type": "segments", "stride": 3}, {"l1_cos": 1.0}),
    ],
    ids=["cif_guided", "segments_topline"],
)
def test_run_distill_with_a_segmentation(tiny, tmp_path, spec, objectives):
    from s3prl_plugins.models.checkpoint import load_checkpoint
    from s3prl_plugins.train.distill import run_distill

    root, data, teacher = tiny
    seg = _uniform_segmentation(data, str(tmp_path / "uniform.seg"))
    cfg = tiny_distill_config(str(tmp_path), data, teacher, objectives, max_steps=4, valid_every=4)
    cfg["student"]["args"].update(subsampling=spec, head={"type": "distil", "layers": [1, 2], "out_dim": 32})
    cfg["data"].update(train_segmentation=seg, valid_segmentation=seg)
    result = run_distill(cfg)
    assert np.isfinite(result["loss"])
    if spec["type"] == "segments":  # the given 3-frame segments
        assert result["frame_rate_hz"] == pytest.approx(50 / 3, rel=0.15)
    else:  # four updates from random α (about 0.5 per frame): guidance has barely started
        assert 1.0 < result["frame_rate_hz"] < 50.0
    model, _ = load_checkpoint(os.path.join(cfg["trainer"]["exp_dir"], "model.pt"))
    assert model.config.subsampling["type"] == spec["type"] and model.head is None


def test_guided_cif_without_segmentation_is_a_clear_error(tiny, tmp_path):
    from s3prl_plugins.train.distill import run_distill

    root, data, teacher = tiny
    cfg = tiny_distill_config(str(tmp_path), data, teacher, {"l1_cos": 1.0, "frame": 0.25}, max_steps=2)
    cfg["student"]["args"].update(
        subsampling={"type": "cif", "stride": 3}, head={"type": "distil", "layers": [1, 2], "out_dim": 32}
    )
    with pytest.raises(Exception, match="needs a segmentation"):
        run_distill(cfg)
    assert not os.path.exists(os.path.join(cfg["trainer"]["exp_dir"], "model.pt"))


def test_boundary_scores():
    from s3prl_plugins.segment.segmentation import boundary_scores

    ref = {"u": [5, 10, 20, 30]}  # inner boundaries 5, 10, 20
    hyp = {"u": [4, 6, 15, 21, 30]}  # 4 hits 5 (6 would too, but 5 is used once), 21 hits 20
    s = boundary_scores(hyp, ref, tolerance=1)
    assert (s["precision"], s["recall"]) == (2 / 4, 2 / 3)
    assert boundary_scores(hyp, ref, tolerance=0)["precision"] == 0.0
    assert boundary_scores(ref, ref)["f1"] == 1.0
