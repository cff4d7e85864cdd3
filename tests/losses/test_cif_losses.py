"""CIF guidance losses (Meng et al. 2022 eq. 3-5) against direct transcriptions of the equations on
small padded batches, and distillation of subsampled students (Fig. 1a, Fig. 1b, CIF with guidance,
the segments topline) through the task."""

import pytest
import torch
from tiny_data import make_tiny_teacher, tiny_student

from s3prl_plugins.losses.cif import boundary_ends, cardinality_loss, frame_loss, segment_loss
from s3prl_plugins.losses.distil import l1_cos_loss
from s3prl_plugins.models.loading import load_pretrained
from s3prl_plugins.nn.subsampling import average_pool
from s3prl_plugins.tasks.distillation import DistillationTask

# two utterances: 10 frames in 4 segments, 7 valid frames (then padding) in 3
IDS = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 3], [4, 4, 5, 5, 5, 5, 6, -100, -100, -100]])
LENGTHS = torch.tensor([10, 7])
ENDS = [[3, 5, 9, 10], [2, 6, 7]]  # t_k, 1-based: the last frame of segment k


def _alpha(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 10, generator=g, dtype=torch.float64)
    a[1, 7:] = 0.9  # padding: must not count
    return a


def test_cardinality_is_eq_3():
    a = _alpha()
    for F in (2, 4):
        ref = 0.0
        for b in range(2):
            T = int(LENGTHS[b])
            ref += ((sum(float(a[b, i]) for i in range(T)) - T / F) / T) ** 2
        assert float(cardinality_loss(a, LENGTHS, F)) == pytest.approx(ref / 2, rel=1e-12)


def test_boundaries():
    ends = boundary_ends(IDS, LENGTHS)
    assert [(e.nonzero().flatten() + 1).tolist() for e in ends] == ENDS


def test_segment_loss_is_eq_4():
    a = _alpha(1)
    ref = 0.0
    for b in range(2):
        for k, t in enumerate(ENDS[b], start=1):
            ref += abs(sum(float(a[b, j]) for j in range(t)) - k)
    assert float(segment_loss(a, IDS, LENGTHS)) == pytest.approx(ref / 2, rel=1e-12)


def test_frame_loss_is_eq_5():
    a = _alpha(2)
    ref = 0.0
    for b in range(2):
        ends = [0] + ENDS[b]
        for k in range(len(ends) - 1):
            for i in range(ends[k], ends[k + 1]):
                ref += abs(float(a[b, i]) - 1.0 / (ends[k + 1] - ends[k]))
    assert float(frame_loss(a, IDS, LENGTHS)) == pytest.approx(ref / 2, rel=1e-6)


def test_guidance_is_zero_for_the_target_alpha_and_has_gradients():
    from s3prl_plugins.nn.subsampling import alpha_from_segments

    target = alpha_from_segments(IDS, LENGTHS).double()
    assert float(segment_loss(target, IDS, LENGTHS)) == pytest.approx(0, abs=1e-9)
    assert float(frame_loss(target, IDS, LENGTHS)) == pytest.approx(0, abs=1e-9)
    a = _alpha().requires_grad_()
    (segment_loss(a, IDS, LENGTHS) + frame_loss(a, IDS, LENGTHS) + cardinality_loss(a, LENGTHS, 4)).backward()
    assert a.grad[0].abs().sum() > 0 and (a.grad[1, 7:] == 0).all()


# --- subsampled students through the distillation task ---------------------------------------------


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = make_tiny_teacher(str(tmp_path_factory.mktemp("t") / "teacher.pt"))
    return load_pretrained(path)


def _student(spec, head=True):
    return tiny_student(spec, head)


def _batch(with_segments=False):
    g = torch.Generator().manual_seed(0)
    n = [16000, 11000]
    wavs = torch.zeros(2, max(n))
    for i, k in enumerate(n):
        wavs[i, :k] = torch.randn(k, generator=g) * 0.1
    batch = {"wavs": wavs, "lengths": torch.tensor(n)}
    if with_segments:
        frames = [k // 320 for k in n]
        ids = torch.full((2, max(frames)), -100)
        for i, f in enumerate(frames):
            ids[i, :f] = torch.arange(f) // 3  # 3-frame segments (the crop of a real segmentation)
        batch["labels"] = ids
    return batch


def test_avg_student_is_distilled_against_pooled_teacher_states(teacher):
    """Fig. 1b, eq. 2: L(subsample(u), f_D(subsample(x)))."""
    torch.manual_seed(0)
    student = _student({"type": "avg", "stride": 2})
    task = DistillationTask(teacher, student, {"l1_cos": 1.0})
    task.eval()
    batch = _batch()
    loss, logs = task(batch)
    with torch.no_grad():
        t = teacher(batch["wavs"], batch["lengths"])
        s = student(batch["wavs"], batch["lengths"])
        targets, t_len = zip(*[average_pool(t.hidden_states[i], t.lengths, 2) for i in (1, 2)])
        preds = student.head(s.hidden_states[-1]).unbind(1)
        ref = l1_cos_loss(list(targets), list(preds), torch.minimum(s.lengths, t_len[0]))
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-5)
    assert logs["frame_rate_hz"][0] / logs["frame_rate_hz"][1] == pytest.approx(25.0, abs=1.0)


def test_conv_deconv_student_is_distilled_at_the_teachers_rate(teacher):
    """Fig. 1a, eq. 1: L(u, upsample(f_D(subsample(x)))); the deconv gets gradients."""
    torch.manual_seed(0)
    student = _student({"type": "conv", "stride": 2, "upsample": "deconv"})
    task = DistillationTask(teacher, student, {"l1_cos": 1.0})
    loss, _ = task(_batch())
    loss.backward()
    assert student.upsampler.deconv.weight.grad.abs().sum() > 0
    assert student.subsampler.fixed.conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="prediction heads only"):
        DistillationTask(
            teacher, _student({"type": "conv", "stride": 2, "upsample": "deconv"}, head=False), {"layer_wise": 1.0}
        )


@pytest.mark.parametrize(
    "objectives",
    [
        {"l1_cos": 1.0, "cardinality": 0.5},
        {"l1_cos": 1.0, "segment": 0.005, "frame": 0.25},
    ],
    ids=["card", "segment_guidance"],
)
def test_cif_student_trains_alpha_through_pooling_and_guidance(teacher, objectives):
    torch.manual_seed(0)
    student = _student({"type": "cif", "stride": 3})
    task = DistillationTask(teacher, student, objectives)
    task.train()
    loss, logs = task(_batch(with_segments=True))
    loss.backward()
    assert torch.isfinite(loss)
    assert student.subsampler.weights.conv.weight.grad.abs().sum() > 0
    assert set(objectives) <= set(logs)
    if "segment" in objectives:
        with pytest.raises(ValueError, match="needs a segmentation"):
            task(_batch())


def test_segments_topline_pools_teacher_and_student_over_the_given_segments(teacher):
    torch.manual_seed(0)
    student = _student({"type": "segments", "stride": 3})
    task = DistillationTask(teacher, student, {"l1_cos": 1.0})
    batch = _batch(with_segments=True)
    loss, logs = task(batch)
    rate = logs["frame_rate_hz"][0] / logs["frame_rate_hz"][1]
    assert rate == pytest.approx(50 / 3, abs=1.0)
    assert torch.isfinite(loss)


def test_guidance_without_cif_and_attention_with_subsampling_are_refused(teacher):
    with pytest.raises(ValueError, match="type: cif"):
        DistillationTask(teacher, _student({"type": "avg", "stride": 2}), {"l1_cos": 1.0, "cardinality": 0.5})
    with pytest.raises(ValueError, match="attention objectives"):
        DistillationTask(teacher, _student({"type": "avg", "stride": 2}, head=False), {"avg_attn": 1.0})
