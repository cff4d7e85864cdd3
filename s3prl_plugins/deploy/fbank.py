"""Kaldi log-Mel filterbanks in exportable ops: a batch at once, no FFT, no Python loop over utterances.

What :class:`s3prl_plugins.nn.LogMelFrontend` computes with ``torchaudio.compliance.kaldi.fbank`` one
utterance at a time (povey window, ``snip_edges``, DC offset removed, pre-emphasis 0.97, no dither, the
window zero-padded to a power of two, power spectrum, Kaldi's Mel banks, ``log(max(., eps))``), written
with gathers and matrix products so that ``torch.onnx.export`` keeps the time axis dynamic: the frames are
gathered from the padded batch, and the real DFT is two constant matrices (window folded in) -- ONNX's
DFT op is not needed and every runtime has MatMul. Equal to torchaudio within float32 rounding
(``tests/deploy/test_deploy.py``).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor, nn

from s3prl_plugins.nn.frontends import LogMelFrontend

PREEMPHASIS = 0.97


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


class ExportableFbank(nn.Module):
    """A :class:`LogMelFrontend` (its settings and its ``mean`` / ``std``) as batched exportable ops.

    ``forward(waveforms (B, L), lengths (B,))`` -> (features (B, frames, n_mels * stack), frames (B,)):
    the same values as ``LogMelFrontend`` on the valid frames, zero past each utterance's frames."""

    def __init__(self, frontend: LogMelFrontend):
        super().__init__()
        from torchaudio.compliance.kaldi import get_mel_banks

        self.window, self.hop = frontend.window, frontend.hop
        self.n_mels, self.stack = frontend.n_mels, frontend.stack_frames
        padded = _next_power_of_two(self.window)
        bins = padded // 2 + 1
        povey = torch.hann_window(self.window, periodic=False, dtype=torch.float64).pow(0.85)
        n = torch.arange(self.window, dtype=torch.float64)[:, None]
        k = torch.arange(bins, dtype=torch.float64)[None, :]
        angle = 2 * math.pi * n * k / padded  # the zero padding adds nothing: only the first `window` rows
        self.register_buffer("dft_cos", (povey[:, None] * torch.cos(angle)).float())
        self.register_buffer("dft_sin", (povey[:, None] * torch.sin(angle)).float())
        banks, _ = get_mel_banks(frontend.n_mels, padded, float(frontend.sample_rate), 20.0, 0.0, 100.0, -500.0, 1.0)
        banks = torch.nn.functional.pad(banks, (0, 1))  # Kaldi's banks skip the Nyquist bin
        self.register_buffer("mel", banks.t().contiguous().float())  # (bins, n_mels)
        self.register_buffer("mean", frontend.mean.detach().clone().float())
        self.register_buffer("std", frontend.std.detach().clone().float())
        self.eps = float(torch.finfo(torch.float32).eps)

    def num_frames(self, lengths: Tensor) -> Tensor:
        n = (torch.div(lengths - self.window, self.hop, rounding_mode="floor") + 1).clamp(min=0)
        return torch.div(n + self.stack - 1, self.stack, rounding_mode="floor")

    def forward(self, waveforms: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        x = waveforms * 32768.0
        frames = torch.div(x.size(1) - self.window, self.hop, rounding_mode="floor") + 1
        start = torch.arange(frames, device=x.device) * self.hop
        index = start[:, None] + torch.arange(self.window, device=x.device)[None, :]  # (T, window)
        f = x[:, index]  # (B, T, window)
        f = f - f.mean(dim=-1, keepdim=True)
        prev = torch.cat([f[..., :1], f[..., :-1]], dim=-1)  # Kaldi: the first sample is its own predecessor
        f = f - PREEMPHASIS * prev
        power = torch.matmul(f, self.dft_cos) ** 2 + torch.matmul(f, self.dft_sin) ** 2
        feats = torch.log(torch.clamp(torch.matmul(power, self.mel), min=self.eps))
        feats = (feats - self.mean) / self.std
        valid = (torch.div(lengths - self.window, self.hop, rounding_mode="floor") + 1).clamp(min=0)  # (B,)
        if self.stack > 1:
            # frame s takes frames stack*s .. stack*s + stack - 1, an utterance's odd last frame repeated
            out_frames = torch.div(frames + self.stack - 1, self.stack, rounding_mode="floor")
            pos = (
                torch.arange(out_frames, device=x.device)[:, None] * self.stack
                + torch.arange(self.stack, device=x.device)[None, :]
            )
            pos = torch.minimum(pos.reshape(1, -1), (valid - 1).clamp(min=0)[:, None])  # (B, S * stack)
            feats = torch.gather(feats, 1, pos.unsqueeze(-1).expand(-1, -1, self.n_mels))
            feats = feats.reshape(feats.size(0), -1, self.n_mels * self.stack)
        out_lengths = torch.div(valid + self.stack - 1, self.stack, rounding_mode="floor")
        keep = torch.arange(feats.size(1), device=x.device)[None, :] < out_lengths[:, None]
        return feats * keep.unsqueeze(-1).to(feats.dtype), out_lengths
