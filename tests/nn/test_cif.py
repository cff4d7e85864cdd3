"""CIF segment pooling (Meng et al. 2022, §2.2 / §5.2): the vectorised form against the per-frame loop,
on random α, padded batches and the edge cases; the segment count rule; gradients."""

import pytest
import torch

from s3prl_plugins.nn.subsampling import cif, cif_reference


def _random(B=3, T=40, D=5, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    alpha = torch.rand(B, T, generator=g, dtype=torch.float64) * scale
    return x, alpha


def _assert_same(x, alpha, lengths=None, tail=None):
    seg, n = cif(x, alpha, lengths, tail)
    ref, ref_n = cif_reference(x, alpha, lengths, tail)
    assert n.tolist() == ref_n.tolist()
    assert seg.shape == ref.shape
    torch.testing.assert_close(seg, ref, atol=1e-9, rtol=0)
    return seg, n


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5], ids=["slow", "sigmoid_range", "above_one"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_the_loop_on_random_alpha(scale, seed):
    """α up to 2.5 makes one frame cross two integers: it then fills whole segments by itself."""
    x, alpha = _random(scale=scale, seed=seed)
    _assert_same(x, alpha)
    _assert_same(x, alpha, tail=0.5)


def test_padded_batch_equals_each_utterance_alone():
    x, alpha = _random(B=4, T=50, seed=3)
    lengths = torch.tensor([50, 31, 7, 44])
    alpha_padded = alpha.clone()
    alpha_padded[1, 31:] = 5.0  # whatever sits in padding is ignored
    seg, n = _assert_same(x, alpha_padded, lengths)
    for b in range(4):
        alone, m = cif(x[b : b + 1, : lengths[b]], alpha[b : b + 1, : lengths[b]])
        assert int(m) == int(n[b])
        torch.testing.assert_close(seg[b, : int(m)], alone[0])
        assert (seg[b, int(m) :] == 0).all()


def test_segment_count_is_floor_of_the_sum():
    x, alpha = _random(B=5, T=60, seed=4)
    lengths = torch.tensor([60, 59, 12, 3, 45])
    _, n = cif(x, alpha, lengths)
    for b in range(5):
        assert int(n[b]) == int(torch.floor(alpha[b, : lengths[b]].sum()))


def test_segments_are_weighted_averages_with_carried_leftovers():
    """α = 0.4, 0.4, 0.4, 0.4, 0.4: fire at t=3 (1.2) and t=5 (2.0); segment 0 = 0.4 x1 + 0.4 x2 +
    0.2 x3, segment 1 = 0.2 x3 (the carried ε) + 0.4 x4 + 0.4 x5."""
    x = torch.arange(5, dtype=torch.float64).reshape(1, 5, 1) + 1.0
    alpha = torch.full((1, 5), 0.4, dtype=torch.float64)
    seg, n = _assert_same(x, alpha)
    assert n.tolist() == [2]
    torch.testing.assert_close(
        seg[0, :, 0], torch.tensor([0.4 * 1 + 0.4 * 2 + 0.2 * 3, 0.2 * 3 + 0.4 * 4 + 0.4 * 5], dtype=torch.float64)
    )


def test_fixed_rate_alpha_is_average_pooling():
    """α = 1/F is fixed-length subsampling (§2.2): non-overlapping averages of F frames, also for F = 3
    whose float64 prefix sums miss the integers by ~1e-14."""
    for F in (2, 3, 4):
        T = 300 * F
        x = torch.randn(2, T, 3, dtype=torch.float64)
        seg, n = cif(x, torch.full((2, T), 1.0 / F, dtype=torch.float64))
        assert n.tolist() == [300, 300]
        torch.testing.assert_close(seg, x.reshape(2, 300, F, 3).mean(2))


def test_float32_input_integrates_in_float64():
    """20,000 frames of float32 α: a float32 prefix sum puts some frames on the wrong side of a boundary
    (the failure being avoided); ours segments float32 input exactly as float64 input."""
    T = 20000
    g = torch.Generator().manual_seed(0)
    alpha, x = torch.rand(1, T, generator=g), torch.randn(1, T, 2, generator=g)
    flips = torch.floor(torch.cumsum(alpha, 1).double()) != torch.floor(torch.cumsum(alpha.double(), 1))
    assert int(flips.sum()) > 0
    seg32, n32 = cif(x, alpha)
    seg64, n64 = cif(x.double(), alpha.double())
    assert n32.tolist() == n64.tolist() == [int(torch.floor(alpha.double().sum()))]
    torch.testing.assert_close(seg32.double(), seg64, atol=1e-5, rtol=0)


def test_never_fires_and_tail_rule():
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    alpha = torch.full((2, 6), 0.1, dtype=torch.float64)  # Σ = 0.6: never fires
    seg, n = cif(x, alpha)
    assert n.tolist() == [0, 0] and seg.shape == (2, 0, 3)
    seg, n = _assert_same(x, alpha, tail=0.5)  # the tail (0.6 >= 0.5) is kept as an average
    assert n.tolist() == [1, 1]
    torch.testing.assert_close(seg[:, 0], x.mean(1))
    _, n = cif(x, alpha, tail_threshold=0.7)
    assert n.tolist() == [0, 0]


def test_exact_integers_and_zero_alpha():
    x = torch.randn(1, 6, 2, dtype=torch.float64)
    alpha = torch.tensor([[1.0, 0.0, 0.5, 0.5, 2.0, 0.0]], dtype=torch.float64)
    seg, n = _assert_same(x, alpha)
    assert n.tolist() == [4]
    torch.testing.assert_close(seg[0], torch.stack([x[0, 0], 0.5 * x[0, 2] + 0.5 * x[0, 3], x[0, 4], x[0, 4]]))


def test_gradients_match_the_loop():
    x, alpha = _random(B=2, T=12, D=3, seed=5)
    x.requires_grad_(True)
    alpha.requires_grad_(True)
    w = torch.randn(2, 10, 3, dtype=torch.float64)

    def loss(fn):
        seg, n = fn(x, alpha)
        return (seg * w[:, : seg.size(1)]).sum()

    gx, ga = torch.autograd.grad(loss(cif), (x, alpha))
    assert torch.isfinite(ga).all() and ga.abs().sum() > 0
    # the loop reference is differentiable in x only (it reads α as floats): compare there, and check α
    # against finite differences
    x2 = x.detach().clone().requires_grad_(True)
    seg, _ = cif_reference(x2, alpha.detach())
    (gx_ref,) = torch.autograd.grad((seg * w[:, : seg.size(1)]).sum(), (x2,))
    torch.testing.assert_close(gx, gx_ref)
    torch.autograd.gradcheck(lambda a: cif(x.detach(), a)[0].sum(dim=1), (alpha.detach().clone().requires_grad_(True),))


def test_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        cif(torch.randn(1, 4, 2), torch.tensor([[0.5, -0.1, 0.2, 0.3]]))
    with pytest.raises(ValueError, match="batch, frames"):
        cif(torch.randn(1, 4, 2), torch.rand(1, 5))
