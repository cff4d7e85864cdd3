"""The GPU benchmark of issue 23, in one run: training updates, where their time goes, inference, pruned
models and Hugging Face ``transformers`` on the same weights -- each measured *before* (speed options off:
the plain forms, ``SPEED_OPTIONS_OFF``) and *after* (the defaults) in the same process, random weights
(speed does not depend on them), bf16 autocast unless a row says fp32.

Sections (each a table on stdout, all of it in ``--json``):

1. ``peak``: the bf16 matrix-multiply peak of this device (8192^3), the yardstick of "% of peak".
2. ``updates``: one optimiser step per micro-batch -- STaR (HuBERT BASE -> STaRHuBERT, TGM layer-wise +
   intra-layer) at micro-batches 12 / 48 / 96, DistilHuBERT (L1 + cos), the CIF student (L1 + cos +
   cardinality), HuBERT BASE and MelHuBERT-10ms masked prediction; utterances padded over 7.8-15.6 s.
   Audio s/s, model FLOPs per second (``torch.utils.flop_counter``: teacher forward + 3 x student forward,
   or 3 x forward for pre-training) and their % of the measured peak, peak memory.
3. ``profile``: the STaR update's device time by op and input shapes (``torch.profiler``), before / after.
4. ``inference``: every preset, batches 1 / 8 / 32 x 10 s, fp32 and bf16, before / after.
5. ``pruned``: MelHuBERT-10ms with 50 % of heads / 50 % of FFN units removed / only the first 6 layers
   (``compress.structured``), 32 x 10 s bf16: speed-up against the ideal by MACs.
6. ``transformers``: ``transformers.HubertModel`` (SDPA attention) with random weights, converted to ours by
   ``models.convert.from_transformers``: outputs compared, time per batch side by side.

Usage::

    python bench/bench_gpu.py --json bench_gpu.json   # on a GPU: the whole table, < 6 min on an H200
    python bench/bench_gpu.py --dry-run               # tiny models on the CPU: every code path in seconds
                                                      # (the speed options, CUDA-only otherwise, switched on there)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from s3prl_plugins.compress.structured import prune_ffn, prune_heads, truncate_layers  # noqa: E402
from s3prl_plugins.eval.probe.profile import register_cpu_attention_flops  # noqa: E402
from s3prl_plugins.models.config import SPEED_OPTIONS, SPEED_OPTIONS_OFF, SSLModelConfig  # noqa: E402
from s3prl_plugins.models.factories import (  # noqa: E402
    distilhubert_config,
    hubert_config,
    melhubert_config,
    preset_config,
    star_hubert_config,
)
from s3prl_plugins.models.ssl_model import SSLModel  # noqa: E402
from s3prl_plugins.nn import frontends  # noqa: E402
from s3prl_plugins.nn.frontends import ConvFeatureExtractor, conv_output_lengths  # noqa: E402
from s3prl_plugins.tasks.distillation import DistillationTask  # noqa: E402
from s3prl_plugins.tasks.masked_prediction import MaskedPredictionTask  # noqa: E402

log = logging.getLogger("bench_gpu")
SR = 16000
VARIANTS = {"before": SPEED_OPTIONS_OFF, "after": SPEED_OPTIONS}
# one option at a time, measured on the STaR update at the profiled micro-batch (which change buys what)
ABLATIONS = {
    "pos_conv only": {**SPEED_OPTIONS_OFF, "pos_conv_precision": "fp32_forward"},
    "conv_norm only": {**SPEED_OPTIONS_OFF, "fast_conv_norm": True},
    "pos_conv fp32 fwd+bwd": {**SPEED_OPTIONS, "pos_conv_precision": "fp32"},
}
INFERENCE_PRESETS = (
    "hubert_base",
    "distilhubert",
    "star_hubert",
    "star_hubert_l",
    "melhubert_base_10ms",
    "melhubert_base_20ms",
)
UPDATE_KINDS = ("star", "distilhubert", "cif", "hubert_mp", "melhubert_mp")


@dataclass
class Settings:
    """What the run measures; ``dry`` replaces every model by a 2-layer, 32-wide one of the same kind."""

    dry: bool = False
    star_batches: Tuple[int, ...] = (12, 48, 96)
    other_batch: int = 24
    seconds: Tuple[float, float] = (7.8, 15.6)  # padded micro-batches: lengths spread over this range
    repeats: int = 5
    warmup: int = 2
    profile_batch: int = 48
    profile_steps: int = 2
    inference_batches: Tuple[int, ...] = (1, 8, 32)
    inference_seconds: float = 10.0
    prune_batch: int = 32
    hf_batches: Tuple[int, ...] = (1, 8, 32)
    peak_n: int = 8192
    budget_s: float = 330.0  # sections left when this is spent are skipped (and say so)
    sections: Tuple[str, ...] = ("peak", "updates", "inference", "pruned", "transformers", "profile")

    @classmethod
    def dry_run(cls) -> "Settings":
        return cls(
            dry=True,
            star_batches=(2,),
            other_batch=2,
            seconds=(0.5, 1.0),
            repeats=1,
            warmup=0,
            profile_batch=2,
            profile_steps=1,
            inference_batches=(2,),
            inference_seconds=0.5,
            prune_batch=2,
            hf_batches=(2,),
            peak_n=256,
            budget_s=600.0,
        )


# --- models -------------------------------------------------------------------------------------------------

TINY_CONV = [(32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 4, 4)]  # the CNN's 320-sample stride, 32 channels


def tiny(config: SSLModelConfig) -> SSLModelConfig:
    """The same kind of model (front-end, subsampling, head type), 2 layers of width 32: the dry run."""
    changes: Dict[str, Any] = dict(
        embed_dim=32,
        num_layers=2,
        num_heads=[2, 2],
        head_dim=16,
        ffn_dims=[64, 64],
        identity_heads=[],
        conv_heads=[],
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    if config.frontend == "conv":
        changes["conv_layers"] = TINY_CONV
    head = config.head
    if head is not None:
        head = dict(head)
        if head["type"] == "distil":
            head.update(layers=[1, 2], out_dim=32)
            head.pop("inter_dim", None)
        elif head["type"] == "hubert":
            head.update(final_dim=16, num_classes=[8])
        else:
            head.update(num_classes=8)
        changes["head"] = head
    return config.replace(**changes)


def model_config(name: str, dry: bool) -> SSLModelConfig:
    """A model of the run by name: a preset, or one of the updates' teachers / students / pre-trained models."""
    builders: Dict[str, Callable[[], SSLModelConfig]] = {
        "hubert_teacher": lambda: hubert_config(with_head=False),
        "hubert_pretrain": lambda: hubert_config(with_head=True),
        "star_student": lambda: star_hubert_config(name="star_hubert"),
        "distil_student": lambda: distilhubert_config(
            pred_layers=(4, 8, 12), feature_grad_mult=0.1, activation_dropout=0.1
        ),
        "cif_student": lambda: distilhubert_config(
            pred_layers=(4, 8, 12),
            feature_grad_mult=0.1,
            activation_dropout=0.1,
            subsampling={"type": "cif", "stride": 4},
            name="distilhubert_cif",
        ),
        "melhubert_pretrain": lambda: melhubert_config(stack_frames=1, num_clusters=512),
    }
    config = builders[name]() if name in builders else preset_config(name)
    return tiny(config) if dry else config


def ssl_models(module: torch.nn.Module) -> List[SSLModel]:
    return [m for m in module.modules() if isinstance(m, SSLModel)]


def set_variant(module: torch.nn.Module, variant: str) -> None:
    for m in ssl_models(module):
        m.set_speed_options(**{**VARIANTS, **ABLATIONS}[variant])


def padded_batch(
    batch: int, seconds: Tuple[float, float], device: torch.device, seed: int = 0
) -> Tuple[torch.Tensor, torch.Tensor]:
    lo, hi = (int(s * SR) for s in seconds)
    lengths = torch.linspace(lo, hi, batch).long() if batch > 1 else torch.tensor([hi])
    g = torch.Generator().manual_seed(seed)
    wavs = 0.1 * torch.randn(batch, hi, generator=g) * (torch.arange(hi)[None, :] < lengths[:, None])
    return wavs.to(device), lengths.to(device)


def frame_labels(model: SSLModel, lengths: torch.Tensor, classes: int, max_frames: int) -> torch.Tensor:
    """Random cluster labels at the model's frame rate, -100 on padding."""
    if isinstance(model.frontend, ConvFeatureExtractor):
        frames = conv_output_lengths(lengths.cpu(), model.frontend.specs)
    else:
        frames = model.frontend.num_frames(lengths.cpu())
    labels = torch.randint(classes, (lengths.numel(), max_frames))
    labels[torch.arange(max_frames)[None, :] >= frames[:, None]] = -100
    return labels.to(lengths.device)


def build_update(kind: str, batch: int, settings: Settings, device: torch.device):
    """(task, batch dict, model FLOPs of one update) of an update kind."""
    dry = settings.dry
    torch.manual_seed(0)
    wavs, lengths = padded_batch(batch, settings.seconds, device)
    data: Dict[str, torch.Tensor] = {"wavs": wavs, "lengths": lengths}
    if kind in ("star", "distilhubert", "cif"):
        teacher = SSLModel(model_config("hubert_teacher", dry))
        if kind == "star":
            task = DistillationTask(
                teacher,
                SSLModel(model_config("star_student", dry)),
                {"layer_wise": {"method": "auto"}, "intra_layer": {"method": "auto"}},
            )
        elif kind == "distilhubert":
            task = DistillationTask(teacher, SSLModel(model_config("distil_student", dry)), {"l1_cos": 1.0})
        else:
            task = DistillationTask(
                teacher, SSLModel(model_config("cif_student", dry)), {"l1_cos": 1.0, "cardinality": 0.5}
            )
        task = task.to(device).train()

        def forward_flops() -> float:
            t = count_flops(lambda: task.teacher_outputs(wavs, lengths), device)
            s = count_flops(lambda: task.student(wavs, lengths, upsample=task.upsampled), device)
            return t + 3 * s
    else:
        name = "hubert_pretrain" if kind == "hubert_mp" else "melhubert_pretrain"
        model = SSLModel(model_config(name, dry))
        mask = (0.08, 10) if kind == "hubert_mp" else (0.07, 10)
        task = (
            MaskedPredictionTask(
                model, mask_prob=mask[0], mask_length=mask[1], unmasked_weight=0.0 if kind == "hubert_mp" else 1.0
            )
            .to(device)
            .train()
        )
        head = model.config.head
        classes = int(head["num_classes"][0]) if isinstance(head["num_classes"], list) else int(head["num_classes"])
        with torch.no_grad():
            max_frames = model.extract_features(wavs, lengths)[0].size(1)
        data["labels"] = frame_labels(model, lengths, classes, max_frames)

        def forward_flops() -> float:
            return 3 * count_flops(lambda: model(wavs, lengths), device)

    return task, data, forward_flops


# --- measuring ------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def autocast(device: torch.device, enabled: bool = True):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def count_flops(fn: Callable[[], Any], device: torch.device) -> float:
    """FLOPs of ``fn()`` under bf16 autocast, without gradients (matmul, conv, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    register_cpu_attention_flops()
    with torch.no_grad(), autocast(device), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def measure_peak(settings: Settings, device: torch.device) -> Dict[str, float]:
    n = settings.peak_n
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    reps = 20 if device.type == "cuda" else 2
    t = median_time(lambda: [a @ b for _ in range(reps)], device, repeats=3, warmup=1) / reps
    return {"n": n, "tflops": 2 * n**3 / t / 1e12}


def optimizer_step(
    task: torch.nn.Module, data: Dict[str, torch.Tensor], opt: torch.optim.Optimizer, device: torch.device
) -> Callable[[], None]:
    def step() -> None:
        with autocast(device):
            loss, _ = task(data)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def measure_updates(settings: Settings, device: torch.device, peak: float, clock: "Clock") -> List[Dict[str, Any]]:
    cases = [("star", b) for b in settings.star_batches] + [(k, settings.other_batch) for k in UPDATE_KINDS[1:]]
    rows = []
    for kind, batch in cases:
        if clock.over(f"updates {kind} x {batch}"):
            break
        try:
            task, data, forward_flops = build_update(kind, batch, settings, device)
            flops = forward_flops()
            opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-5)
            step = optimizer_step(task, data, opt, device)
            audio = float(data["lengths"].sum()) / SR
            variants = list(VARIANTS) + (list(ABLATIONS) if kind == "star" and batch == settings.profile_batch else [])
            for variant in variants:
                set_variant(task, variant)
                reset_memory(device)
                t = median_time(step, device, settings.repeats, settings.warmup)
                rows.append(
                    {
                        "kind": kind,
                        "batch": batch,
                        "variant": variant,
                        "time_s": t,
                        "audio_s_per_s": audio / t,
                        "model_tflop": flops / 1e12,
                        "tflops": flops / t / 1e12,
                        "pct_peak": 100 * flops / t / 1e12 / peak,
                        "peak_gib": peak_gib(device),
                        "audio_s": audio,
                    }
                )
            del task, opt, step, data
        except torch.cuda.OutOfMemoryError as e:  # a micro-batch too large for this device: say so, go on
            rows.append({"kind": kind, "batch": batch, "variant": "-", "error": f"out of memory: {str(e)[:80]}"})
        reset_memory(device)
    return rows


def measure_profile(
    settings: Settings, device: torch.device, clock: "Clock", top: int = 12
) -> Dict[str, List[Dict[str, Any]]]:
    """The STaR update's time by op (and input shapes), as % of the device's (CPU: the ops') total."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    out: Dict[str, List[Dict[str, Any]]] = {}
    if clock.over("profile"):
        return out
    task, data, _ = build_update("star", settings.profile_batch, settings, device)
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-5)
    step = optimizer_step(task, data, opt, device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for variant in VARIANTS:
        set_variant(task, variant)
        step()
        sync(device)
        with profile(activities=activities, record_shapes=True) as prof:
            for _ in range(settings.profile_steps):
                step()
            sync(device)
        events = prof.key_averages(group_by_input_shape=True)
        attr = "self_device_time_total" if cuda else "self_cpu_time_total"
        ops = [e for e in events if e.device_type == DeviceType.CPU and getattr(e, attr) > 0]
        total = sum(getattr(e, attr) for e in ops)
        if cuda:  # kernels are rows of their own: their sum is the device's busy time
            total = sum(getattr(e, attr) for e in events if e.device_type == DeviceType.CUDA) or total
        ops.sort(key=lambda e: -getattr(e, attr))
        out[variant] = [
            {
                "op": e.key,
                "shapes": str(e.input_shapes)[:90],
                "ms_per_step": getattr(e, attr) / 1e3 / settings.profile_steps,
                "pct": 100 * getattr(e, attr) / max(total, 1),
            }
            for e in ops[:top]
        ]
    del task, opt, step
    reset_memory(device)
    return out


def measure_inference(settings: Settings, device: torch.device, clock: "Clock") -> List[Dict[str, Any]]:
    rows = []
    n = int(settings.inference_seconds * SR)
    for preset in INFERENCE_PRESETS:
        if clock.over(f"inference {preset}"):
            break
        torch.manual_seed(0)
        model = SSLModel(model_config(preset, settings.dry)).to(device).eval()
        for batch in settings.inference_batches:
            wavs = 0.1 * torch.randn(batch, n, device=device)
            for bf16 in (False, True):
                for variant in VARIANTS:
                    set_variant(model, variant)
                    reset_memory(device)

                    def run() -> None:
                        with torch.inference_mode(), autocast(device, bf16):
                            model(wavs)

                    t = median_time(run, device, settings.repeats, settings.warmup)
                    rows.append(
                        {
                            "preset": preset,
                            "batch": batch,
                            "dtype": "bf16" if bf16 else "fp32",
                            "variant": variant,
                            "time_ms": 1e3 * t,
                            "peak_gib": peak_gib(device),
                        }
                    )
        model = None  # freed before the next preset is built
        reset_memory(device)
    return rows


def measure_pruned(settings: Settings, device: torch.device, clock: "Clock") -> List[Dict[str, Any]]:
    """MelHuBERT-10ms and its pruned variants (Lin et al. 2024 §V-B, Fig. 6-7): measured vs ideal speed-up."""
    if clock.over("pruned"):
        return []
    torch.manual_seed(0)
    base = SSLModel(model_config("melhubert_base_10ms", settings.dry)).eval()
    c = base.config
    layers = range(c.num_layers)
    variants = {
        "unpruned": base,
        "heads -50%": prune_heads(base, {i: list(range(c.num_heads[i] // 2)) for i in layers}),
        "ffn -50%": prune_ffn(base, {i: list(range(c.ffn_dims[i] // 2)) for i in layers}),
        f"first {max(c.num_layers // 2, 1)} layers": truncate_layers(base, max(c.num_layers // 2, 1)),
    }
    n = int(settings.inference_seconds * SR)
    one = 0.1 * torch.randn(1, n, device=device)
    wavs = 0.1 * torch.randn(settings.prune_batch, n, device=device)
    rows = []
    for name, model in variants.items():
        model = model.to(device).eval()
        macs = count_flops(lambda: model(one), device) / 2
        for variant in VARIANTS:
            set_variant(model, variant)

            def run() -> None:
                with torch.inference_mode(), autocast(device):
                    model(wavs)

            t = median_time(run, device, settings.repeats, settings.warmup)
            rows.append({"model": name, "variant": variant, "gmacs_per_utt": macs / 1e9, "time_ms": 1e3 * t})
    for variant in VARIANTS:
        ref = next(r for r in rows if r["model"] == "unpruned" and r["variant"] == variant)
        for r in rows:
            if r["variant"] == variant:
                r["speedup"] = ref["time_ms"] / r["time_ms"]
                r["ideal"] = ref["gmacs_per_utt"] / r["gmacs_per_utt"]
                r["ratio"] = r["speedup"] / r["ideal"]
    return rows


def hf_hubert(dry: bool):
    """A random ``transformers.HubertModel`` (HuBERT BASE, or a tiny one) and the same weights as ours."""
    import transformers

    from s3prl_plugins.models.convert import from_transformers

    kw: Dict[str, Any] = dict(
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0
    )
    if dry:
        kw.update(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=[c for c, _, _ in TINY_CONV],
            conv_kernel=[k for _, k, _ in TINY_CONV],
            conv_stride=[s for _, _, s in TINY_CONV],
            num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=4,
        )
    torch.manual_seed(0)
    try:
        hf_config = transformers.HubertConfig(**kw, attn_implementation="sdpa")
    except TypeError:  # a transformers that takes it only at from_pretrained: its default (SDPA where available)
        hf_config = transformers.HubertConfig(**kw)
    hf = transformers.HubertModel(hf_config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        config, state = from_transformers(tmp)
    ours = SSLModel(config)
    ours.load_state_dict(state)
    return hf, ours.eval()


def measure_transformers(settings: Settings, device: torch.device, clock: "Clock") -> Dict[str, Any]:
    if clock.over("transformers"):
        return {}
    try:
        hf, ours = hf_hubert(settings.dry)
    except Exception as e:  # transformers missing or changed: the rest of the table still stands
        log.warning("transformers side by side skipped: %s", e)
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    hf, ours = hf.to(device), ours.to(device)
    n = int(settings.inference_seconds * SR)
    one = 0.1 * torch.randn(1, n, device=device)
    with torch.inference_mode():
        ref = hf(one).last_hidden_state.float()
        scale = ref.abs().max().item()
        agree = {
            "fp32 ours vs transformers fp32": (ours(one).hidden_states[-1].float() - ref).abs().max().item() / scale
        }
        with autocast(device):
            agree["bf16 ours vs transformers fp32"] = (
                ours(one).hidden_states[-1].float() - ref
            ).abs().max().item() / scale
            agree["bf16 transformers vs transformers fp32"] = (
                hf(one).last_hidden_state.float() - ref
            ).abs().max().item() / scale
    rows = []
    for batch in settings.hf_batches:
        wavs = 0.1 * torch.randn(batch, n, device=device)
        for bf16 in (False, True):
            for who in ("transformers", "ours before", "ours after"):
                if who != "transformers":
                    set_variant(ours, who.split()[1])
                    fn = lambda: ours(wavs)  # noqa: E731
                else:
                    fn = lambda: hf(wavs)  # noqa: E731

                def run(fn=fn) -> None:
                    with torch.inference_mode(), autocast(device, bf16):
                        fn()

                t = median_time(run, device, settings.repeats, settings.warmup)
                rows.append({"model": who, "batch": batch, "dtype": "bf16" if bf16 else "fp32", "time_ms": 1e3 * t})
    return {"max_abs_diff_rel": agree, "rows": rows}


class Clock:
    """The run's time budget: a section that would start after it is spent is skipped and named."""

    def __init__(self, budget_s: float):
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.skipped: List[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over(self, what: str) -> bool:
        if self.elapsed() > self.budget_s:
            log.warning("time budget (%.0f s) spent: skipping %s", self.budget_s, what)
            self.skipped.append(what)
            return True
        log.info("[%.0f s] %s", self.elapsed(), what)
        return False


# --- the report -------------------------------------------------------------------------------------------------


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_report(res: Dict[str, Any]) -> str:
    lines = [
        f"# {res['device']}, torch {res['torch']}, {'DRY RUN (tiny models)' if res['dry'] else 'full sizes'}; "
        f"before = speed options off {SPEED_OPTIONS_OFF}, after = defaults {SPEED_OPTIONS}"
    ]
    if "peak" in res:
        lines.append(f"\nbf16 matmul peak ({res['peak']['n']}^3): {res['peak']['tflops']:.0f} TFLOP/s")
    if res.get("updates"):
        lines += [
            "\n## updates (forward + backward + AdamW, bf16 autocast, padded micro-batches)",
            "| update | micro-batch | variant | s/update | audio s/s | TFLOP/s | % of peak | peak GiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in res["updates"]:
            if "error" in r:
                lines.append(f"| {r['kind']} | {r['batch']} | - | {r['error']} | | | | |")
                continue
            lines.append(
                f"| {r['kind']} | {r['batch']} | {r['variant']} | {r['time_s']:.3f} | {r['audio_s_per_s']:,.0f} | "
                f"{r['tflops']:.1f} | {r['pct_peak']:.1f} | {_f(r['peak_gib'], '.1f')} |"
            )
        ups = {(r["kind"], r["batch"], r["variant"]): r for r in res["updates"] if "error" not in r}
        for (kind, batch, variant), r in ups.items():
            if variant == "after" and (kind, batch, "before") in ups:
                lines.append(
                    f"{kind} x {batch}: after / before audio s/s = "
                    f"{r['audio_s_per_s'] / ups[(kind, batch, 'before')]['audio_s_per_s']:.2f}x"
                )
    if res.get("profile"):
        for variant, rows in res["profile"].items():
            lines += [
                f"\n## where the STaR update's time goes ({variant})",
                "| op | input shapes | ms/update | % |",
                "|---|---|---|---|",
            ]
            lines += [f"| {r['op']} | {r['shapes']} | {r['ms_per_step']:.2f} | {r['pct']:.1f} |" for r in rows]
    if res.get("inference"):
        lines += [
            f"\n## inference, ms per batch of {res['settings']['inference_seconds']:g} s utterances (inference mode)",
            "| preset | batch | fp32 before | fp32 after | bf16 before | bf16 after | bf16 / fp32 (after) |",
            "|---|---|---|---|---|---|---|",
        ]
        table: Dict[Tuple[str, int], Dict[str, float]] = {}
        for r in res["inference"]:
            table.setdefault((r["preset"], r["batch"]), {})[f"{r['dtype']} {r['variant']}"] = r["time_ms"]
        for (preset, batch), t in table.items():
            lines.append(
                f"| {preset} | {batch} | {t['fp32 before']:.1f} | {t['fp32 after']:.1f} | {t['bf16 before']:.1f} | "
                f"{t['bf16 after']:.1f} | {t['bf16 after'] / t['fp32 after']:.2f} |"
            )
    if res.get("pruned"):
        lines += [
            f"\n## pruned MelHuBERT-10ms, bf16, {res['settings']['prune_batch']} x "
            f"{res['settings']['inference_seconds']:g} s",
            "| model | variant | GMACs/utt | ms | speed-up | ideal (MACs) | measured / ideal |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['model']} | {r['variant']} | {r['gmacs_per_utt']:.4g} | {r['time_ms']:.1f} | {r['speedup']:.2f} | "
            f"{r['ideal']:.2f} | {r['ratio']:.2f} |"
            for r in res["pruned"]
        ]
    hf = res.get("transformers") or {}
    if "error" in hf:
        lines.append(f"\n## transformers HubertModel: not run ({hf['error']})")
    elif hf:
        lines += [
            f"\n## transformers HubertModel (SDPA) vs ours, same weights, ms per batch of "
            f"{res['settings']['inference_seconds']:g} s",
            "| batch | dtype | transformers | ours before | ours after | transformers / ours after |",
            "|---|---|---|---|---|---|",
        ]
        table2: Dict[Tuple[int, str], Dict[str, float]] = {}
        for r in hf["rows"]:
            table2.setdefault((r["batch"], r["dtype"]), {})[r["model"]] = r["time_ms"]
        for (batch, dtype), t in table2.items():
            lines.append(
                f"| {batch} | {dtype} | {t['transformers']:.1f} | {t['ours before']:.1f} | {t['ours after']:.1f} | "
                f"{t['transformers'] / t['ours after']:.2f} |"
            )
        lines.append(
            f"max |difference| / max |reference| of the last layer, 1 x {res['settings']['inference_seconds']:g} s: "
            + "; ".join(f"{k}: {v:.2e}" for k, v in hf["max_abs_diff_rel"].items())
        )
    if res.get("skipped"):
        lines.append(f"\nskipped (time budget): {', '.join(res['skipped'])}")
    lines.append(f"\ntotal {res['elapsed_s']:.0f} s")
    return "\n".join(lines)


def run(settings: Settings, device: torch.device) -> Dict[str, Any]:
    clock = Clock(settings.budget_s)
    res: Dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "dry": settings.dry,
        "settings": asdict(settings),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    peak = float("nan")
    if "peak" in settings.sections:
        res["peak"] = measure_peak(settings, device)
        peak = res["peak"]["tflops"]
    if "updates" in settings.sections:
        res["updates"] = measure_updates(settings, device, peak, clock)
    if "inference" in settings.sections:
        res["inference"] = measure_inference(settings, device, clock)
    if "pruned" in settings.sections:
        res["pruned"] = measure_pruned(settings, device, clock)
    if "transformers" in settings.sections:
        res["transformers"] = measure_transformers(settings, device, clock)
    if "profile" in settings.sections:
        res["profile"] = measure_profile(settings, device, clock)
    res["skipped"] = clock.skipped
    res["elapsed_s"] = clock.elapsed()
    return res


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny models, one repeat, on the CPU unless --device: every code path in seconds",
    )
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --dry-run)")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--sections", nargs="+", choices=Settings().sections, help="only these sections")
    p.add_argument("--budget-s", type=float, help="skip what would start after this many seconds")
    p.add_argument("--repeats", type=int)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = Settings.dry_run() if args.dry_run else Settings()
    if args.sections:
        settings.sections = tuple(args.sections)
    if args.budget_s is not None:
        settings.budget_s = args.budget_s
    if args.repeats is not None:
        settings.repeats = args.repeats
    device = torch.device(args.device or ("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"))
    if args.dry_run:  # the speed options take effect on CUDA only; a dry run on the CPU runs their code too
        frontends.FAST_PATH_DEVICES.add(device.type)
    if device.type != "cuda" and not args.dry_run:
        log.warning("no GPU: the full sizes on the CPU take hours; use --dry-run to check the code paths")
    res = run(settings, device)
    print(format_report(res))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
