"""CUDA paths (opt-in: ``pytest --rungpu`` on a machine with a GPU; CI has none).

Self-contained on purpose (random waveforms in memory, no audio files, no s3prl), so that these run on
a bare GPU machine with only torch installed.
"""

import os

import pytest
import torch

from s3prl_plugins.losses.star import avg_attention_kl, tgm_losses
from s3prl_plugins.models.checkpoint import load_checkpoint
from s3prl_plugins.models.factories import hubert_config, star_hubert_config
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.tasks.distillation import DistillationTask
from s3prl_plugins.train.trainer import Trainer, TrainerConfig

pytestmark = pytest.mark.gpu

CONV = [(32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 4, 4)]


def _states(batch, frames, dims, layers, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, frames, dims, generator=g, dtype=torch.float64) for _ in range(layers)]


@pytest.mark.parametrize("method", ["direct", "gram"])
def test_star_losses_on_cuda_under_bf16_autocast_match_float64(method):
    """The losses switch autocast off and compute in float32: under a bf16 training step on the GPU
    they agree with a float64 CPU reference (the D x D form subtracts large terms; bf16 would not)."""
    t, s = _states(3, 300, 96, 5, 0), _states(3, 300, 64, 5, 1)
    lengths = torch.tensor([300, 211, 57])
    ref = tgm_losses(t, s, lengths, method="direct")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = tgm_losses([x.float().cuda() for x in t], [x.float().cuda() for x in s], lengths.cuda(), method=method)
    for k in ("layer_wise", "intra_layer"):
        assert out[k].dtype == torch.float32
        assert abs(out[k].item() / ref[k].item() - 1) < 1e-4, (k, out[k].item(), ref[k].item())
    att_t = [torch.softmax(torch.randn(3, 300, 300, dtype=torch.float64), -1) for _ in range(4)]
    att_s = [torch.softmax(torch.randn(3, 300, 300, dtype=torch.float64), -1) for _ in range(4)]
    ref_kl = avg_attention_kl(att_t, att_s, lengths)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        kl = avg_attention_kl([a.float().cuda() for a in att_t], [a.float().cuda() for a in att_s], lengths.cuda())
    assert abs(kl.item() / ref_kl.item() - 1) < 1e-4


class _Waves(torch.utils.data.Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.items = [0.1 * torch.randn(int(16000 * (0.6 + 0.05 * i)), generator=g) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _collate(wavs):
    n = max(w.numel() for w in wavs)
    out = torch.zeros(len(wavs), n)
    for i, w in enumerate(wavs):
        out[i, : w.numel()] = w
    return {"wavs": out, "lengths": torch.tensor([w.numel() for w in wavs])}


def _task():
    torch.manual_seed(0)
    teacher = SSLModel(
        hubert_config(
            embed_dim=64,
            num_layers=2,
            num_heads=4,
            ffn_dim=128,
            with_head=False,
            conv_layers=CONV,
            pos_conv_kernel=8,
            pos_conv_groups=4,
        )
    )
    student = SSLModel(
        star_hubert_config(
            embed_dim=32, num_layers=2, num_heads=2, ffn_dim=64, conv_layers=CONV, pos_conv_kernel=8, pos_conv_groups=4
        )
    )  # dropout 0.1
    return DistillationTask(teacher, student, {"layer_wise": 1.0, "intra_layer": 1.0})


def _train(exp_dir, stop_at=None):
    from s3prl_plugins.train.distill import export_student

    cfg = TrainerConfig(
        exp_dir=str(exp_dir),
        max_steps=6,
        lr=1e-3,
        warmup_steps=2,
        schedule="cosine",
        save_every=2,
        log_every=2,
        valid_every=100,
        device="cuda",
        amp="bf16",
        seed=0,
    )
    task = _task()
    trainer = Trainer(cfg, task, (_Waves(), [[0, 1], [2, 3], [4, 5], [6, 7]], _collate), export=export_student)
    assert trainer.amp_dtype == torch.bfloat16 and next(task.student.parameters()).is_cuda
    trainer.train(stop_at=stop_at)
    return task


def test_distillation_trains_with_bf16_amp_and_resumes_exactly_on_cuda(tmp_path):
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    straight = _train(tmp_path / "a")
    _train(tmp_path / "b", stop_at=3)  # interrupted after 3 updates (checkpoint at 2)
    resumed = _train(tmp_path / "b")
    a, b = straight.student.state_dict(), resumed.student.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # dropout draws from the GPU's stream: it is saved too
    # the exported student (written from GPU tensors) loads on the CPU
    model, _ = load_checkpoint(os.path.join(tmp_path / "a", "model.pt"))
    assert not next(model.parameters()).is_cuda
    with torch.no_grad():
        out = model(0.1 * torch.randn(1, 16000))
    assert len(out.hidden_states) == 3 and torch.isfinite(out.hidden_states[-1]).all()


class _Labelled(_Waves):
    """Waveforms with random cluster labels, one per model frame."""

    def __init__(self, model, n=8, classes=8):
        super().__init__(n)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            frames = [int(model.extract_features(w[None], torch.tensor([w.numel()]))[1][0]) for w in self.items]
        self.labels = [torch.randint(classes, (f,), generator=g) for f in frames]

    def __getitem__(self, i):
        return self.items[i], self.labels[i]


def _collate_labelled(items):
    batch = _collate([w for w, _ in items])
    n = max(lab.numel() for _, lab in items)
    batch["labels"] = torch.full((len(items), n), -100, dtype=torch.long)
    for i, (_, lab) in enumerate(items):
        batch["labels"][i, : lab.numel()] = lab
    return batch


def _pretrain(exp_dir, stop_at=None):
    from s3prl_plugins.models.factories import melhubert_config
    from s3prl_plugins.tasks.masked_prediction import MaskedPredictionTask

    torch.manual_seed(0)
    model = SSLModel(
        melhubert_config(
            stack_frames=2,
            embed_dim=32,
            num_layers=2,
            num_heads=4,
            ffn_dim=64,
            num_clusters=8,
            pos_conv_kernel=8,
            pos_conv_groups=4,
        )
    )
    data = _Labelled(model)
    task = MaskedPredictionTask(model, mask_prob=0.14, mask_length=5, unmasked_weight=1.0)
    cfg = TrainerConfig(
        exp_dir=str(exp_dir),
        max_steps=6,
        lr=1e-3,
        warmup_steps=2,
        schedule="linear",
        save_every=2,
        log_every=2,
        valid_every=100,
        device="cuda",
        amp="bf16",
        seed=0,
    )
    trainer = Trainer(cfg, task, (data, [[0, 1], [2, 3], [4, 5], [6, 7]], _collate_labelled))
    stats = trainer.train(stop_at=stop_at)
    return task, stats


def test_masked_prediction_trains_with_bf16_amp_and_resumes_exactly_on_cuda(tmp_path):
    torch.backends.cudnn.deterministic = True
    straight, _ = _pretrain(tmp_path / "a")
    _pretrain(tmp_path / "b", stop_at=3)
    resumed, _ = _pretrain(tmp_path / "b")
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.isfinite(a[k].float()).all() and torch.equal(a[k], b[k]), k


def test_padded_bf16_attention_does_not_materialise_score_matrices():
    """A padded batch under bf16 autocast trains through SDPA's memory-efficient kernel: the peak of a
    forward+backward stays far below one layer's (B, H, T, T) scores (the math kernel's cost)."""
    from s3prl_plugins.nn.transformer import SelfAttention

    attn = SelfAttention(432, 12, 36, dropout=0.1).cuda().train()  # STaRHuBERT's heads: 36 wide
    b, t = 4, 3000
    x = torch.randn(b, t, 432, device="cuda", requires_grad=True)
    pad = torch.zeros(b, t, dtype=torch.bool, device="cuda")
    pad[1:, 2000:] = True
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _, _ = attn(x, pad)
    out.float().pow(2).mean().backward()
    torch.cuda.synchronize()
    scores = b * 12 * t * t * 2  # one (B, H, T, T) bf16 tensor: 864 MB
    assert torch.cuda.max_memory_allocated() - base < scores / 4
    # and it computes what the float32 layer computes
    attn.eval()
    with torch.no_grad():
        ref, _, _ = attn(x, pad)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low, _, _ = attn(x, pad)
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_speed_options_fast_paths_match_the_plain_forms_on_cuda():
    """Issue 23's fast paths on the GPU: the positional convolution's float32 island and the fused per-channel
    GroupNorm give, under bf16 autocast, what the plain forms give (as close to float32 or closer), and a
    STaR update's gradients agree."""
    import torch.nn.functional as F

    from s3prl_plugins.models.config import SPEED_OPTIONS, SPEED_OPTIONS_OFF
    from s3prl_plugins.nn.frontends import channel_group_norm

    x = 0.5 + torch.randn(4, 64, 5000, device="cuda")
    w, b = torch.rand(64, device="cuda") + 0.5, torch.randn(64, device="cuda")
    torch.testing.assert_close(channel_group_norm(x, w, b), F.group_norm(x, 64, w, b), atol=1e-4, rtol=1e-4)
    torch.manual_seed(0)
    cfg = hubert_config(
        embed_dim=96,
        num_layers=2,
        num_heads=4,
        ffn_dim=128,
        with_head=False,
        conv_layers=CONV,
        pos_conv_kernel=32,
        pos_conv_groups=4,
        dropout=0.0,
        attention_dropout=0.0,
    )
    fast = SSLModel(cfg).cuda().eval()
    plain = SSLModel(cfg.replace(**SPEED_OPTIONS_OFF)).cuda().eval()
    plain.load_state_dict(fast.state_dict())
    wavs = 0.1 * torch.randn(3, 48000, device="cuda")
    lengths = torch.tensor([48000, 40000, 30000], device="cuda")
    with torch.no_grad():
        ref = plain(wavs, lengths).hidden_states
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out_fast, out_plain = fast(wavs, lengths).hidden_states, plain(wavs, lengths).hidden_states
    for r, f, p in zip(ref, out_fast, out_plain):
        err_f, err_p = (f.float() - r).abs().max().item(), (p.float() - r).abs().max().item()
        assert err_f < 0.1 * r.abs().max().item() and err_f <= 1.5 * err_p + 1e-3, (err_f, err_p)
    grads = []
    for options in (SPEED_OPTIONS, SPEED_OPTIONS_OFF):
        task = _task().cuda()
        for m in (task.teacher, task.student):
            m.set_speed_options(**options)
        task.student.eval()  # no dropout: the two runs see the same computation
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = task({"wavs": wavs, "lengths": lengths})
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in task.student.parameters()]))
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.99


def test_bench_gpu_dry_run_on_cuda(tmp_path):
    """The benchmark's every code path on the GPU (tiny models): the CUDA profiler split, memory, OOM guard."""
    import importlib.util
    import json
    import sys

    spec = importlib.util.spec_from_file_location(
        "bench_gpu", os.path.join(os.path.dirname(__file__), "..", "bench", "bench_gpu.py")
    )
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = bench
    spec.loader.exec_module(bench)
    assert bench.main(["--dry-run", "--device", "cuda", "--json", str(tmp_path / "b.json")]) == 0
    res = json.loads((tmp_path / "b.json").read_text())
    assert res["device"] != "CPU" and all(r["peak_gib"] > 0 for r in res["updates"])
    assert all(rows for rows in res["profile"].values())
