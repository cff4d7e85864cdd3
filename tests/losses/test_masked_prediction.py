"""Masked prediction (HuBERT; MelHuBERT eq. 1-2): span masks, the loss against a direct transcription on
a padded batch, and the unmasked-frame weight."""

import torch
import torch.nn.functional as F

from s3prl_plugins.losses.masked_prediction import masked_cross_entropy
from s3prl_plugins.models.factories import melhubert_config
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.tasks.masked_prediction import MaskedPredictionTask, compute_span_mask


def test_span_mask_counts_and_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([100, 40, 3])
    mask = compute_span_mask(lengths, 100, 0.1, 5, g)
    assert not mask[1, 40:].any() and not mask[2].any()  # padding never masked; too short: nothing
    for i, n in enumerate((100, 40)):
        starts = int(0.1 * n)  # floor(p*T + u) is int(p*T) or int(p*T)+1
        assert 5 <= int(mask[i].sum()) <= (starts + 1) * 5


def test_masked_cross_entropy_is_the_sum_over_masked_frames():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 5, generator=g)
    targets = torch.randint(0, 5, (2, 6), generator=g)
    targets[1, 4:] = -100  # padding
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 1:3] = True
    mask[1, 3:6] = True  # two of them padded
    loss, correct, count = masked_cross_entropy(logits, targets, mask)
    ref = -sum(F.log_softmax(logits[b, t], -1)[targets[b, t]] for b, t in [(0, 1), (0, 2), (1, 3)])
    torch.testing.assert_close(loss, ref)
    assert int(count) == 3
    assert int(correct) == sum(int(logits[b, t].argmax() == targets[b, t]) for b, t in [(0, 1), (0, 2), (1, 3)])


def _task(unmasked_weight):
    torch.manual_seed(0)
    cfg = melhubert_config(
        stack_frames=2,
        embed_dim=16,
        num_layers=1,
        num_heads=2,
        ffn_dim=32,
        num_clusters=7,
        pos_conv_kernel=4,
        pos_conv_groups=2,
        dropout=0.0,
        attention_dropout=0.0,
    )
    return MaskedPredictionTask(SSLModel(cfg), mask_prob=0.2, mask_length=2, unmasked_weight=unmasked_weight).eval()


def test_unmasked_weight_adds_the_unmasked_frames():
    """unmasked_weight=1: MelHuBERT eq. 1 over every valid frame (normalised by the masked count)."""
    g = torch.Generator().manual_seed(1)
    wavs = torch.randn(2, 16000, generator=g) * 0.1
    lengths = torch.tensor([16000, 11000])
    frames = 50
    labels = torch.randint(0, 7, (2, frames), generator=g)
    batch = {"wavs": wavs, "lengths": lengths, "labels": labels}
    masked_only, logs0 = _task(0.0)(batch)
    both, logs1 = _task(1.0)(batch)
    n_masked = logs0["acc"][1]
    # the unmasked term: its summed cross-entropy (logged with its frame count) over the masked count
    loss_u_sum, n_u = logs1["loss_unmasked"]
    torch.testing.assert_close(float(both), float(masked_only) + loss_u_sum / n_masked, rtol=1e-5, atol=1e-6)
    assert n_u > n_masked > 0 and loss_u_sum > 0
