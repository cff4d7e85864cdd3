"""STaR losses (Jang, Kim and Kim 2024 eq. 1, 3-6) and DistilHuBERT's loss (Chang et al. 2022 eq. 1) against
direct transcriptions of the equations, on padded batches, and the D x D form against the N x N one."""

import math

import pytest
import torch
import torch.nn.functional as F

from s3prl_plugins.losses import star
from s3prl_plugins.losses.distil import l1_cos_loss

LENGTHS = [7, 4, 6]


def _utts(dims, lengths=LENGTHS, seed=0, dtype=torch.float64):
    """Per layer, per utterance (n_b, D) tensors."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(n, d, generator=g, dtype=dtype) * (1 + l) for n in lengths] for l, d in enumerate(dims)]


def _pad(per_layer, garbage=1e3, seed=1):
    """Pad each layer's utterances into (B, T, D) with large garbage in the padding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for utts in per_layer:
        T = max(u.size(0) for u in utts)
        x = torch.randn(len(utts), T, utts[0].size(1), generator=g, dtype=utts[0].dtype) * garbage
        for b, u in enumerate(utts):
            x[b, : u.size(0)] = u
        out.append(x)
    return out


def _norm(x, how):
    if how == "l2":
        return x / x.norm(dim=-1, keepdim=True)
    if how == "dim":
        return x / math.sqrt(x.size(-1))
    return x


def _layer_wise_direct(t_utts, s_utts, how):
    """Eq. 3-4, one utterance at a time: per utterance sum_l ||G^T - G^S||^2 with G = F F^T."""
    out = []
    for b in range(len(t_utts[0])):
        total = 0.0
        for tl, sl in zip(t_utts, s_utts):
            ft, fs = _norm(tl[b], how), _norm(sl[b], how)
            total += ((ft @ ft.T - fs @ fs.T) ** 2).sum()
        out.append(total)
    return torch.stack(out)


def _intra_direct(t_utts, s_utts, how):
    """Eq. 5-6: G^l = F^{l-1} (F^l)^T, per utterance sum_{l>=1} ||G^T - G^S||^2."""
    out = []
    for b in range(len(t_utts[0])):
        total = 0.0
        for l in range(1, len(t_utts)):
            gt = _norm(t_utts[l - 1][b], how) @ _norm(t_utts[l][b], how).T
            gs = _norm(s_utts[l - 1][b], how) @ _norm(s_utts[l][b], how).T
            total += ((gt - gs) ** 2).sum()
        out.append(total)
    return torch.stack(out)


@pytest.mark.parametrize("how", ["none", "dim", "l2"])
@pytest.mark.parametrize("method", ["direct", "gram"])
def test_layer_wise_matches_equation_on_padded_batch(how, method):
    t_utts, s_utts = _utts([12, 12, 12], seed=0), _utts([5, 5, 5], seed=1)
    lengths = torch.tensor(LENGTHS)
    per_utt = _layer_wise_direct(t_utts, s_utts, how)
    n2 = lengths.double() ** 2
    got_sum = star.layer_wise_tgm_loss(
        _pad(t_utts), _pad(s_utts), lengths, normalize=how, reduction="sum", method=method
    )
    got_mean = star.layer_wise_tgm_loss(
        _pad(t_utts), _pad(s_utts), lengths, normalize=how, reduction="mean", method=method
    )
    torch.testing.assert_close(got_sum, per_utt.sum(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_mean, (per_utt / n2).mean(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("how", ["none", "l2"])
@pytest.mark.parametrize("method", ["direct", "gram"])
def test_intra_layer_matches_equation_on_padded_batch(how, method):
    t_utts, s_utts = _utts([12, 12, 12, 12], seed=2), _utts([5, 5, 5, 5], seed=3)
    lengths = torch.tensor(LENGTHS)
    per_utt = _intra_direct(t_utts, s_utts, how)
    got = star.intra_layer_tgm_loss(_pad(t_utts), _pad(s_utts), lengths, normalize=how, reduction="mean", method=method)
    torch.testing.assert_close(got, (per_utt / lengths.double() ** 2).mean(), rtol=1e-9, atol=1e-9)


def test_padded_batch_is_mean_of_one_by_one():
    """The documented reduction: a padded batch gives the mean of the utterances' own losses."""
    t_utts, s_utts = _utts([10, 10, 10], seed=4, dtype=torch.float32), _utts([6, 6, 6], seed=5, dtype=torch.float32)
    lengths = torch.tensor(LENGTHS)
    for fn in (star.layer_wise_tgm_loss, star.intra_layer_tgm_loss):
        batch = fn(_pad(t_utts), _pad(s_utts), lengths)
        singles = [
            fn([l[b][None] for l in t_utts], [l[b][None] for l in s_utts], torch.tensor([n]))
            for b, n in enumerate(LENGTHS)
        ]
        torch.testing.assert_close(batch, torch.stack(singles).mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", [star.layer_wise_tgm_loss, star.intra_layer_tgm_loss])
def test_gram_form_equals_direct_form_with_gradients(fn):
    """||A A^T - B B^T||^2 from D x D products == the N x N transcription (1e-5 relative), values and
    the student's gradients, on a padded batch with teacher width 768 and student width 432."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([50, 31])
    t = [torch.randn(2, 50, 768, generator=g, dtype=torch.float64) for _ in range(3)]
    s1 = [torch.randn(2, 50, 432, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    s2 = [x.detach().clone().requires_grad_(True) for x in s1]
    for how in ("none", "l2"):
        a = fn(t, s1, lengths, normalize=how, method="direct")
        b = fn(t, s2, lengths, normalize=how, method="gram")
        assert abs(float(a - b)) <= 1e-5 * abs(float(a)), (how, float(a), float(b))
        ga = torch.autograd.grad(a, s1)
        gb = torch.autograd.grad(b, s2)
        for x, y in zip(ga, gb):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-9)


def test_gram_form_float32_close_to_float64():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([300, 200])
    t = [torch.randn(2, 300, 64, generator=g) for _ in range(2)]
    s = [torch.randn(2, 300, 32, generator=g) for _ in range(2)]
    ref = star.layer_wise_tgm_loss([x.double() for x in t], [x.double() for x in s], lengths, method="direct")
    got = star.layer_wise_tgm_loss(t, s, lengths, method="gram")
    assert got.dtype == torch.float32
    assert abs(float(got) - float(ref)) <= 1e-4 * float(ref)


def test_auto_method_picks_the_cheaper_form():
    assert not star._use_gram("auto", 250, 768, 432)
    assert star._use_gram("auto", 1500, 768, 432)
    with pytest.raises(ValueError, match="method"):
        star._use_gram("fast", 10, 2, 2)


def test_padded_frames_get_no_gradient():
    t = [torch.randn(2, 6, 8) for _ in range(2)]
    s = [torch.randn(2, 6, 4, requires_grad=True) for _ in range(2)]
    lengths = torch.tensor([6, 3])
    loss = star.layer_wise_tgm_loss(t, s, lengths) + star.intra_layer_tgm_loss(t, s, lengths)
    loss.backward()
    for x in s:
        assert x.grad[1, 3:].abs().max() == 0
        assert x.grad[1, :3].abs().max() > 0


def test_l2_normalisation_is_scale_invariant_and_none_is_not():
    t = [torch.randn(1, 5, 8) for _ in range(2)]
    s = [torch.randn(1, 5, 4) for _ in range(2)]
    lengths = torch.tensor([5])
    scaled = [x * torch.rand(1, 5, 1) * 10 for x in s]
    torch.testing.assert_close(star.layer_wise_tgm_loss(t, s, lengths), star.layer_wise_tgm_loss(t, scaled, lengths))
    assert not torch.allclose(
        star.layer_wise_tgm_loss(t, s, lengths, normalize="none"),
        star.layer_wise_tgm_loss(t, scaled, lengths, normalize="none"),
    )
    with pytest.raises(ValueError, match="normalize"):
        star.layer_wise_tgm_loss(t, s, lengths, normalize="batch")


def _attn_utts(lengths, layers, seed):
    g = torch.Generator().manual_seed(seed)
    return [
        [torch.softmax(torch.randn(n, n, generator=g, dtype=torch.float64) * 2, -1) for n in lengths]
        for _ in range(layers)
    ]


def _pad_attn(per_layer):
    out = []
    for utts in per_layer:
        T = max(u.size(0) for u in utts)
        x = torch.rand(len(utts), T, T, dtype=utts[0].dtype)  # garbage
        for b, u in enumerate(utts):
            x[b] = 0.3
            x[b, : u.size(0), : u.size(0)] = u
        out.append(x)
    return out


def test_avg_attention_kl_matches_equation():
    """Eq. 1: sum_l sum_t KL(teacher row t || student row t), one utterance at a time."""
    ta, sa = _attn_utts(LENGTHS, 3, 0), _attn_utts(LENGTHS, 3, 1)
    lengths = torch.tensor(LENGTHS)
    per_utt = []
    for b in range(len(LENGTHS)):
        total = 0.0
        for l in range(3):
            p, q = ta[l][b], sa[l][b]
            total += F.kl_div(q.log(), p, reduction="sum")  # sum_t sum_j p (log p - log q)
        per_utt.append(total)
    per_utt = torch.stack(per_utt)
    got_sum = star.avg_attention_kl(_pad_attn(ta), _pad_attn(sa), lengths, reduction="sum")
    got_mean = star.avg_attention_kl(_pad_attn(ta), _pad_attn(sa), lengths)
    torch.testing.assert_close(got_sum.double(), per_utt.sum(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_mean.double(), (per_utt / lengths.double()).mean(), rtol=1e-5, atol=1e-6)
    # zero when student == teacher; the last-layer baseline uses the last map only
    assert float(star.avg_attention_kl(_pad_attn(ta), _pad_attn(ta), lengths)) < 1e-6
    last = star.last_attention_kl(_pad_attn(ta), _pad_attn(sa), lengths, reduction="sum")
    expect = sum(F.kl_div(sa[2][b].log(), ta[2][b], reduction="sum") for b in range(3))
    torch.testing.assert_close(last.double(), expect, rtol=1e-5, atol=1e-6)


def test_time_mismatch_is_cut_up_to_two_frames_and_raises_beyond():
    t = [torch.randn(2, 10, 8) for _ in range(2)]
    s = [torch.randn(2, 9, 4) for _ in range(2)]
    lengths = torch.tensor([10, 7])
    cut = star.layer_wise_tgm_loss(t, s, lengths)
    ref = star.layer_wise_tgm_loss([x[:, :9] for x in t], s, torch.tensor([9, 7]))
    torch.testing.assert_close(cut, ref)
    with pytest.raises(ValueError, match="frame rates differ"):
        star.layer_wise_tgm_loss(t, [torch.randn(2, 5, 4) for _ in range(2)], lengths)
    with pytest.raises(ValueError, match="map student layers"):
        star.layer_wise_tgm_loss(t, s[:1], lengths)


def test_map_layers():
    assert star.map_layers(12, 12) == list(range(13))
    assert star.map_layers(12, 4, "uniform") == [0, 3, 6, 9, 12]
    assert star.map_layers(4, 2, [0, 2, 4]) == [0, 2, 4]
    with pytest.raises(ValueError, match="layer_map: uniform"):
        star.map_layers(12, 4)
    with pytest.raises(ValueError, match="entries"):
        star.map_layers(12, 4, [0, 3, 12])
    with pytest.raises(ValueError, match="increase"):
        star.map_layers(4, 2, [0, 3, 2])


def test_l1_cos_matches_equation():
    """Chang et al. eq. 1 per frame, frames of the batch averaged, layers summed."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 3])
    h = [torch.randn(2, 5, 6, generator=g) for _ in range(2)]
    p = [torch.randn(2, 5, 6, generator=g) for _ in range(2)]
    total = 0.0
    for hl, pl in zip(h, p):
        frames = []
        for b, n in enumerate(lengths.tolist()):
            for t in range(n):
                x, y = hl[b, t], pl[b, t]
                cos = (x @ y) / (x.norm() * y.norm())
                frames.append((x - y).abs().sum() / 6 - 0.5 * torch.log(torch.sigmoid(cos)))
        total += torch.stack(frames).mean()
    torch.testing.assert_close(l1_cos_loss(h, p, lengths, cos_weight=0.5), total, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="out_dim"):
        l1_cos_loss(h, [x[..., :3] for x in p], lengths)


@pytest.mark.parametrize("method", ["direct", "gram"])
def test_both_tgm_losses_together_equal_each_alone(method):
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([9, 5])
    t = [torch.randn(2, 9, 12, generator=g, dtype=torch.float64) for _ in range(4)]
    s = [torch.randn(2, 9, 7, generator=g, dtype=torch.float64) for _ in range(4)]
    both = star.tgm_losses(t, s, lengths, method=method)
    torch.testing.assert_close(both["layer_wise"], star.layer_wise_tgm_loss(t, s, lengths, method="direct"))
    torch.testing.assert_close(both["intra_layer"], star.intra_layer_tgm_loss(t, s, lengths, method="direct"))
    assert star._use_gram("auto", 500, 768, 432, terms=2) and not star._use_gram("auto", 500, 768, 432, terms=1)
