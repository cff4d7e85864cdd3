"""The methods a compression chain can take, one class each, collected in :data:`STEPS` (Lin et al. 2024,
"Compressing Transformer-Based Self-Supervised Models for Speech Processing").

A step class declares its config keys (name -> (type, range), checked before anything runs), what each of
its iterations does (``iterations``, computed on the current model) and the model an iteration leaves
(``apply``, with the updates it is then recovered for). The pipeline does the rest for every step: load ->
step -> recover -> measure -> trajectory. A new method is one class here, registered with
:func:`register_step` (the config names it, as ESPnet's ``ClassChoices`` does).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Optional, Tuple, Type

import torch

from s3prl_plugins.compress import diagonal, scores
from s3prl_plugins.compress.dp import UNITS, ExpectedMacs, Gates, PruneTask, backbone, describe, prune_gated
from s3prl_plugins.compress.structured import (
    PruningError,
    count_heads,
    prune_ffn,
    prune_heads,
    replace_heads,
    truncate_layers,
)
from s3prl_plugins.compress.weight import LossPlateau, WeightMasks, density_schedule, masks_from_model, model_density
from s3prl_plugins.config import ConfigError, check_keys, check_mapping, check_range, check_section, check_type, nearest
from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.nn.frontends import LogMelFrontend
from s3prl_plugins.tasks.distillation import check_loss, check_sections
from s3prl_plugins.tasks.objectives import setting_names

Keys = Dict[str, Tuple[Any, Dict[str, Any]]]

# keys every step that trains takes
UPDATES: Keys = {"updates": (int, {"min": 0}), "trainer": (Optional[Dict[str, Any]], {})}
ITERATIONS: Keys = {"iterations": (int, {"min": 1})}
FRACTION = {"gt": 0, "max": 1}


@dataclass
class StepContext:
    """What a step may use of the running chain: its data and objective helpers, where the iteration
    writes, and its number. ``chain`` is the :class:`~s3prl_plugins.compress.pipeline.Chain`."""

    chain: Any
    out_dir: str
    iteration: int
    name: str


@dataclass
class Applied:
    """An iteration's result: the model to recover, its objective from now on, the recovery updates
    (``train=False``: none, the model is measured as it is), and what constrains the recovery."""

    model: SSLModel
    objective: Dict[str, Any]
    updates: int
    masks: Optional[WeightMasks] = None
    plateau: Optional[LossPlateau] = None
    train: bool = True


class Step:
    """One compression method. Subclasses set ``name`` and ``keys`` and implement ``apply``; ``required`` names the
    keys a config must give (checked with the rest, before anything is written), ``columns`` what the step adds to
    each row of ``trajectory.csv``, ``density_of`` the row field whose ratio to the chain's first row is the
    density the step leaves (the report's density axis; None: no such axis)."""

    name: ClassVar[str] = ""
    keys: ClassVar[Keys] = {}
    required: ClassVar[Tuple[str, ...]] = ()
    columns: ClassVar[Tuple[str, ...]] = ()  # trajectory.csv columns the step adds (beside the measurements)
    density_of: ClassVar[Optional[str]] = None

    def check(self, step: Dict[str, Any], where: str) -> None:
        """Checks beyond the keys' types and ranges (nested sections, combinations)."""

    def iterations(self, step: Dict[str, Any], model: SSLModel) -> Iterator[Dict[str, Any]]:
        """The iterations of the step, lazily: a dict describing each (stored in the checkpoint's history)."""
        for _ in range(int(step.get("iterations", 1))):
            yield {}

    def apply(
        self,
        ctx: StepContext,
        model: SSLModel,
        step: Dict[str, Any],
        action: Dict[str, Any],
        objective: Dict[str, Any],
        row: Dict[str, Any],
    ) -> Applied:
        raise NotImplementedError


STEPS: Dict[str, Step] = {}


def register_step(cls: Type[Step]) -> Type[Step]:
    """Class decorator: make a step available to chains under ``cls.name``."""
    if not cls.name or cls.name in STEPS:
        raise ValueError(f"a compression step needs a new name, not {cls.name!r}")
    STEPS[cls.name] = cls()
    return cls


def check_step(step: Any, where: str, check_trainer: Callable[[Dict[str, Any], str], None]) -> Dict[str, Any]:
    """One entry of ``steps``: the method by name, its keys, types and ranges (``check_trainer`` checks a
    ``trainer`` section)."""
    step = check_mapping(step, where)
    method = step.get("method")
    if not isinstance(method, str) or method not in STEPS:
        check_keys(step, {"method"}.union(*(s.keys for s in STEPS.values())), where)  # a misspelt "method", by name
        raise ConfigError(
            f"{where}.method: must be one of {', '.join(STEPS)}, not {method!r}{nearest(str(method), STEPS)}"
        )
    impl = STEPS[method]
    check_keys({k: v for k, v in step.items() if k != "method"}, impl.keys, f"{where} ({method})")
    missing = [k for k in impl.required if step.get(k) is None]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: missing (the {method} step needs {', '.join(impl.required)})")
    for k, v in step.items():
        if k in ("method", "trainer"):
            continue
        tp, meta = impl.keys[k]
        value = check_type(v, tp, f"{where}.{k}")
        for i, x in enumerate(value) if isinstance(value, list) else [(None, value)]:
            check_range(x, meta, f"{where}.{k}" + ("" if i is None else f"[{i}]"))
    if step.get("trainer") is not None:
        check_trainer(check_mapping(step["trainer"], f"{where}.trainer"), f"{where}.trainer")
    impl.check(step, where)
    return step


# --------------------------------------------------------------------------------------------- steps
@register_step
class WeightPruning(Step):
    """Global magnitude pruning of the transformer's linear weights to each target density (§II-B), the
    next one when the loss plateaus (§IV-B) or after a fixed number of updates."""

    name = "weight"
    columns = ("threshold",)
    density_of = "weight_density"
    # the trigger: type -> key -> (type, range)
    TRIGGERS: ClassVar[Dict[str, Keys]] = {
        "fixed": {"type": (str, {}), "updates": (int, {"min": 0})},
        "plateau": {
            "type": (str, {}),
            "decay": (float, {"gt": 0, "max": 0.999999999}),
            "window": (int, {"min": 1}),
            "tolerance": (float, {"min": 0}),
            "max_updates": (int, {"min": 1}),
        },
    }
    keys = {
        "densities": (List[float], FRACTION),
        "schedule": (str, {"choices": ("paper",)}),
        "start": (float, FRACTION),
        "stop": (float, FRACTION),
        "trigger": (Dict[str, Any], {}),
        **UPDATES,
    }

    def check(self, step: Dict[str, Any], where: str) -> None:
        trig = check_mapping(step.get("trigger", {"type": "fixed"}), f"{where}.trigger")
        check_keys(trig, set().union(*self.TRIGGERS.values()), f"{where}.trigger")  # a misspelt key first, by name
        kind = trig.get("type", "fixed")
        check_range(
            check_type(kind, str, f"{where}.trigger.type"), {"choices": tuple(self.TRIGGERS)}, f"{where}.trigger.type"
        )
        check_section(trig, self.TRIGGERS[kind], f"{where}.trigger")
        # a schedule goes down (each iteration prunes more); refused here, before iteration 1 runs
        ds = [float(d) for d in step.get("densities") or []]
        if any(b >= a for a, b in zip(ds, ds[1:])):
            raise ConfigError(
                f"{where}.densities: each density must be below the one before (e.g. [0.8, 0.6]), not {ds}"
            )
        if "start" in step and "stop" in step and float(step["stop"]) >= float(step["start"]):
            raise ConfigError(f"{where}.stop ({step['stop']}) must be below {where}.start ({step['start']})")

    def iterations(self, step, model):
        if step.get("densities"):
            targets = [float(d) for d in step["densities"]]
        else:
            start = float(step.get("start", round(model_density(model), 6)))
            targets = density_schedule(start, float(step.get("stop", 0.05)))
        for d in targets:
            yield {"density": d}

    def apply(self, ctx, model, step, action, objective, row):
        masks = masks_from_model(model)
        row["threshold"] = masks.prune_to(model, action["density"])
        trig = step.get("trigger", {"type": "fixed"})
        plateau = None
        if trig["type"] == "plateau":
            plateau = LossPlateau(
                float(trig.get("decay", 0.9998)), int(trig.get("window", 15000)), float(trig.get("tolerance", 1e-3))
            )
            updates = int(trig.get("max_updates", step.get("updates", 200)))
        else:
            updates = int(trig.get("updates", step.get("updates", 200)))
        return Applied(model, objective, updates, masks=masks, plateau=plateau)


@register_step
class HeadPruning(Step):
    """Removes attention heads by score: eq. 5's gradient score (normalised within layers, removed
    globally) or eq. 4's l1 score (per layer)."""

    name = "heads"
    columns = ("removed",)
    density_of = "attention_heads"
    keys = {
        "score": (str, {"choices": ("gradient", "l1")}),
        "remove": (int, {"min": 1}),
        **ITERATIONS,
        "score_fraction": (float, FRACTION),
        "min_keep": (int, {"min": 0}),
        **UPDATES,
    }

    def iterations(self, step, model):
        for _ in range(int(step.get("iterations", 1))):
            yield {"remove": int(step.get("remove", 1))}

    def apply(self, ctx, model, step, action, objective, row):
        if count_heads(model) == 0:
            raise PruningError(f"{ctx.name}: the model has no heads left to prune")
        min_keep = int(step.get("min_keep", 1))
        if step.get("score", "gradient") == "l1":
            plan = scores.select_per_layer(scores.head_l1_scores(model), action["remove"], min_keep=min_keep)
        else:
            chain = ctx.chain
            train = chain.dataset("train", model, objective)
            raw = scores.head_gradient_scores(
                chain.build_task(model, objective), model, chain.batches(train, float(step.get("score_fraction", 0.25)))
            )
            plan = scores.select_global(
                scores.normalize_within_layers(raw), action["remove"], min_keep_per_layer=min_keep
            )
        row["removed"] = {str(k): v for k, v in plan.items()}
        return Applied(
            prune_heads(model, plan, allow_empty_layer=min_keep == 0), objective, int(step.get("updates", 200))
        )


@register_step
class FFNPruning(Step):
    """Removes each layer's FFN units with the smallest eq. 6 scores, ``remove`` per iteration (for
    ``iterations``, or until the widest layer is ``until`` units wide)."""

    name = "ffn"
    density_of = "ffn_units"
    keys = {"remove": (int, {"min": 1}), **ITERATIONS, "until": (int, {"min": 1}), **UPDATES}

    def iterations(self, step, model):
        if step.get("until") is not None:
            per = int(step.get("remove", 128))
            width = max(model.config.ffn_dims)
            n = max(0, -(-(width - int(step["until"])) // per))
        else:
            n = int(step.get("iterations", 1))
        for _ in range(n):
            yield {"remove": int(step.get("remove", 128))}

    def apply(self, ctx, model, step, action, objective, row):
        plan = scores.select_per_layer(scores.ffn_l1_scores(model), action["remove"], what="FFN units")
        return Applied(prune_ffn(model, plan), objective, int(step.get("updates", 200)))


@register_step
class KnowledgeDistillation(Step):
    """A shallower student of the current model (§VI-B), trained on its cluster posteriors (eq. 7); the
    chain's objective is that distillation from then on."""

    name = "kd"
    required = ("layers",)
    keys = {"layers": (int, {"min": 1}), "temperature": (float, {"gt": 0}), "seed": (int, {"min": 0}), **UPDATES}

    def iterations(self, step, model):
        yield {"layers": int(step["layers"])}

    def apply(self, ctx, model, step, action, objective, row):
        teacher_path = os.path.join(os.path.dirname(ctx.out_dir), f"{ctx.iteration - 1:02d}_teacher.pt")
        save_checkpoint(teacher_path, model.cpu().eval(), kind="compression_teacher")
        torch.manual_seed(int(step.get("seed", 0)))
        c = model.config
        head = c.head if c.head and c.head.get("type") == "cluster" else None
        if head is None:
            raise PruningError("kd: the model to distil needs a cluster head (its posteriors are the targets, eq. 7)")
        n = action["layers"]
        student_cfg = type(c).from_dict(
            {
                **c.to_dict(),
                "num_layers": n,
                "num_heads": [max(c.num_heads)] * n,
                "ffn_dims": [max(c.ffn_dims)] * n,
                "identity_heads": [],
                "conv_heads": [],
                "mask_embedding": False,
                "weight_density": None,
                "name": f"{c.name}_kd{n}",
            }
        )
        student = SSLModel(student_cfg)
        if isinstance(model.frontend, LogMelFrontend):  # the log-Mel normalisation statistics (buffers, not learned)
            student.frontend.load_state_dict(model.frontend.state_dict())
        objective = {
            "type": "distillation",
            "teacher": teacher_path,
            "objectives": {"cluster_kl": {"weight": 1.0, "temperature": float(step.get("temperature", 1.0))}},
        }
        row["objective_after"] = objective
        return Applied(student, objective, int(step.get("updates", 200)))


@register_step
class FirstLayers(Step):
    """Keeps the first ``layers`` transformer layers (no training)."""

    name = "first_k"
    required = ("layers",)
    keys = {"layers": (int, {"min": 1})}

    def iterations(self, step, model):
        yield {"layers": int(step["layers"])}

    def apply(self, ctx, model, step, action, objective, row):
        return Applied(truncate_layers(model, action["layers"]), objective, 0, train=False)


@register_step
class HeadReplacement(Step):
    """Replaces the most diagonal attention heads (eq. 9) by the identity (eq. 10) or a 1-D convolution."""

    name = "replace_heads"
    columns = ("replaced",)
    density_of = "attention_heads"
    keys = {
        "kind": (str, {"choices": ("identity", "conv")}),
        "remove": (int, {"min": 1}),
        **ITERATIONS,
        "kernel": (int, {"min": 1}),
        "utterances": (int, {"min": 1}),
        **UPDATES,
    }

    def iterations(self, step, model):
        for _ in range(int(step.get("iterations", 1))):
            yield {"remove": int(step.get("remove", 1))}

    def apply(self, ctx, model, step, action, objective, row):
        if sum(model.config.num_heads) == 0:
            raise PruningError(f"{ctx.name}: the model has no attention heads left to replace")
        if step.get("kernel"):
            model.config.head_conv_kernel = int(step["kernel"])
        chain = ctx.chain
        per_head = diagonal.head_diagonality(
            model, chain.batches(chain.plain_dataset("train", model)), max_utterances=int(step.get("utterances", 100))
        )
        plan = scores.select_global(
            [-t for t in per_head], action["remove"], min_keep_per_layer=0, what="attention heads"
        )
        row["replaced"] = {str(k): v for k, v in plan.items()}
        return Applied(
            replace_heads(model, plan, step.get("kind", "identity")), objective, int(step.get("updates", 200))
        )


@register_step
class DistilPrune(Step):
    """Distil and prune at once to a MACs budget (DPHuBERT's two stages, :mod:`s3prl_plugins.compress.dp`):
    HardConcrete gates over ``units`` (CNN channels, heads, FFN units, whole sublayers) learned with a
    distillation objective under a Lagrangian on the expected MACs for ``updates`` updates (in ``<iteration>/prune/``),
    the gated units removed, then ``final_updates`` of distillation of the pruned model (the recovery).

    The objective: the chain's, where it is a distillation (the same teacher, e.g. a STaR student pruned further);
    else the model before the step is the teacher (saved as ``<NN>_teacher.pt``, as ``kd`` does) -- DPHuBERT
    distils the pruned model from its unpruned self. ``objectives`` / ``loss`` replace the distillation's terms
    and settings (default STaR's layer-wise + intra-layer TGM, layer to layer)."""

    name = "dp"
    required = ("target_macs", "updates")
    density_of = "macs_per_second"
    keys = {
        "target_macs": (float, {"gt": 0, "lt": 1}),
        "units": (List[str], {"choices": UNITS}),
        "updates": (int, {"min": 1}),
        "warmup": (int, {"min": 0}),
        "reg_lr": (float, {"gt": 0}),
        "objectives": (Optional[Dict[str, Any]], {}),
        "loss": (Optional[Dict[str, Any]], {}),
        "final_updates": (int, {"min": 0}),
        "trainer": (Optional[Dict[str, Any]], {}),
    }
    columns = ("target_macs", "macs_kept_expected", "macs_kept_gated", "shape")
    DEFAULT_OBJECTIVES = {"layer_wise": 1.0, "intra_layer": 1.0}

    def check(self, step, where):
        if step.get("objectives"):
            check_sections(step["objectives"], step.get("loss"), f"{where}.")
            return
        # the objectives are the chain's or the default: an objective's setting cannot be placed from here
        loss = check_mapping(step.get("loss"), f"{where}.loss")
        moved = [k for k in loss if k in setting_names()]
        if moved:
            raise ConfigError(
                f"{where}.loss.{moved[0]}: an objective's setting; give the step its objectives with it, "
                f"e.g. {where}.objectives: {{layer_wise: {{weight: 1.0, {moved[0]}: ...}}}}"
            )
        check_loss(loss, f"{where}.loss")

    def iterations(self, step, model):
        gates = Gates(model, step.get("units", list(UNITS)))
        macs = ExpectedMacs(model)
        least = macs.smallest(gates) / macs.total
        target = float(step["target_macs"])
        if target < least:
            raise PruningError(
                f"dp: target_macs {target:g} cannot be reached by gating {list(step.get('units', UNITS))}: the "
                f"smallest this model can reach is {least:.4f} of its MACs (what no unit gates -- e.g. the "
                "positional convolution, or a CNN layer's last channel -- stays)"
            )
        yield {"target_macs": target}

    def apply(self, ctx, model, step, action, objective, row):
        chain = ctx.chain
        if objective["type"] == "distillation":
            objective = dict(objective)
        else:
            teacher_path = os.path.join(os.path.dirname(ctx.out_dir), f"{ctx.iteration - 1:02d}_teacher.pt")
            save_checkpoint(teacher_path, model.cpu().eval(), kind="compression_teacher")
            objective = {"type": "distillation", "teacher": teacher_path, "objectives": dict(self.DEFAULT_OBJECTIVES)}
            model = backbone(model)  # a distilled student: no masked-prediction head or mask embedding
        if step.get("objectives"):
            objective["objectives"] = dict(step["objectives"])
        if step.get("loss") is not None:
            objective["loss"] = dict(step["loss"])
        model.train()
        gates = Gates(model, step.get("units", list(UNITS)))
        macs = ExpectedMacs(model)
        holder = {}

        def wrap(task, m):
            holder["task"] = PruneTask(
                task,
                m,
                gates,
                macs,
                action["target_macs"],
                int(step.get("warmup", max(1, int(step["updates"]) // 3))),
                float(step.get("reg_lr", 0.02)),
            )
            return holder["task"]

        model, last, ran = chain.recover(
            model, os.path.join(ctx.out_dir, "prune"), int(step["updates"]), objective, step, wrap=wrap
        )
        gates.eval()
        values = gates.deterministic()
        row["target_macs"] = action["target_macs"]
        row["macs_kept_expected"] = round(float(macs(gates.keep_probabilities()) / macs.total), 6)
        row["macs_kept_gated"] = round(float(macs(values) / macs.total), 6)
        row["prune_updates"] = ran
        row["prune_loss"] = last.get("loss")
        log = logging.getLogger(__name__)
        for key, gate in gates.gates.items():  # what the gates would have removed whole, said
            kind, i = key.rsplit("_", 1)
            if kind == "conv" and float(gate.keep_probability().sum()) < 0.5:
                log.warning(
                    "%s: every gate of CNN layer %s closed; its most probable channel stays (a CNN layer cannot go: "
                    "its stride sets the frame rate)",
                    ctx.name,
                    i,
                )
            elif kind == "heads" and not float(values[key].sum()):
                log.info("%s: layer %s loses every head (its attention is its output bias from now on)", ctx.name, i)
        pruned = prune_gated(model, values)
        row["shape"] = describe(pruned)
        row["objective_after"] = objective
        log.info(
            "%s: gates keep %.3f of the MACs (target %.3f): %s",
            ctx.name,
            row["macs_kept_gated"],
            action["target_macs"],
            row["shape"],
        )
        updates = int(step.get("final_updates", step["updates"]))
        return Applied(pruned, objective, updates, train=updates > 0)


@register_step
class Train(Step):
    """The control: the same updates, nothing removed."""

    name = "train"
    keys = {**ITERATIONS, **UPDATES}

    def apply(self, ctx, model, step, action, objective, row):
        return Applied(model, objective, int(step.get("updates", 200)))
