"""Knowledge distillation of cluster posteriors (Lin et al. 2024 §II-E, eq. 7-8).

``L = (1/T) sum_t KL[p(c_t | x) || p_hat(c_t | x)]`` with ``p`` the teacher's distribution over the
k-means clusters (eq. 2) and ``p_hat(c_t | x) = softmax(W_hat o_t)`` the student's, through its own
trainable projection ``W_hat`` (eq. 8). With a temperature ``tau`` both distributions are
``softmax(z / tau)`` (Hinton et al. 2015; the paper studies a teacher temperature above 1); ``tau = 1``
is eq. 7 exactly. Each utterance averages over its own ``T`` valid frames; the batch averages utterances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cluster_kl(teacher_logits: Tensor, student_logits: Tensor, lengths: Tensor, temperature: float = 1.0) -> Tensor:
    """Eq. 7 on a padded batch.

    Args:
        teacher_logits, student_logits: (batch, frames, clusters); frames beyond ``lengths`` are ignored.
        lengths: (batch,) valid frames (frames past the shorter of the two logits are cut).
        temperature: ``tau`` applied to both.

    Returns:
        the scalar loss (mean over utterances of the per-frame mean KL).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, not {temperature}")
    t = min(teacher_logits.size(1), student_logits.size(1))
    teacher_logits, student_logits = teacher_logits[:, :t].float(), student_logits[:, :t].float()
    lengths = lengths.clamp(max=t)
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (B, T)
    valid = torch.arange(t, device=kl.device)[None, :] < lengths[:, None]
    per_utt = (kl * valid).sum(1) / lengths.clamp(min=1).to(kl.dtype)
    return per_utt.mean()
