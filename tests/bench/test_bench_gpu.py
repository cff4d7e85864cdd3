"""bench/bench_gpu.py's dry run: every section and code path of the GPU benchmark, on tiny models on the CPU,
so that a session with a lent GPU can run the full one in one call (issue 23)."""

import importlib.util
import json
import os
import sys

import pytest
from paths import REPO

BENCH = os.path.join(REPO, "bench", "bench_gpu.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_dry_run_covers_every_section(bench, tmp_path, capsys, monkeypatch):
    from s3prl_plugins.nn import frontends

    monkeypatch.setattr(frontends, "FAST_PATH_DEVICES", set(frontends.FAST_PATH_DEVICES))  # the dry run adds the CPU
    out = tmp_path / "bench.json"
    assert bench.main(["--dry-run", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["dry"] and res["skipped"] == [] and res["peak"]["tflops"] > 0
    variants = set(bench.VARIANTS)
    # every update kind, before and after (and STaR's one-option-at-a-time rows), with FLOPs and a rate
    ups = res["updates"]
    assert {(r["kind"], r["variant"]) for r in ups} >= {(k, v) for k in bench.UPDATE_KINDS for v in variants}
    assert {r["variant"] for r in ups if r["kind"] == "star"} == variants | set(bench.ABLATIONS)
    assert all(r["audio_s_per_s"] > 0 and r["model_tflop"] > 0 and r["pct_peak"] > 0 for r in ups)
    # where the time goes, before and after
    assert set(res["profile"]) == variants and all(len(rows) > 3 for rows in res["profile"].values())
    # every preset at every batch, fp32 and bf16, before and after
    keys = {(r["preset"], r["dtype"], r["variant"]) for r in res["inference"]}
    assert keys == {(p, d, v) for p in bench.INFERENCE_PRESETS for d in ("fp32", "bf16") for v in variants}
    # pruned variants: fewer MACs than the unpruned model, speed-up against the ideal
    pruned = {r["model"]: r for r in res["pruned"] if r["variant"] == "after"}
    assert len(pruned) == 4 and all(r["ideal"] > 1 for k, r in pruned.items() if k != "unpruned")
    # transformers' HubertModel on the same weights: equal in fp32, within bf16 rounding under autocast
    agree = res["transformers"]["max_abs_diff_rel"]
    assert agree["fp32 ours vs transformers fp32"] < 1e-4
    assert agree["bf16 ours vs transformers fp32"] < 5e-2
    assert {r["model"] for r in res["transformers"]["rows"]} == {"transformers", "ours before", "ours after"}
    assert frontends.FAST_PATH_DEVICES == {"cuda", "cpu"}  # its fast paths ran on the CPU
    report = capsys.readouterr().out
    for heading in (
        "bf16 matmul peak",
        "## updates",
        "## where the STaR update's time goes (after)",
        "## inference",
        "## pruned MelHuBERT-10ms",
        "## transformers HubertModel",
    ):
        assert heading in report


def test_time_budget_skips_and_names_what_is_left(bench):
    settings = bench.Settings.dry_run()
    settings.budget_s = 0.0
    settings.sections = ("updates", "pruned")
    res = bench.run(settings, bench.torch.device("cpu"))
    assert res["updates"] == [] and res["pruned"] == []
    assert res["skipped"] == ["updates star x 2", "pruned"]
