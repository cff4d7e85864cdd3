"""The report stage: SUPERB results gathered per model, TensorBoard loss curves, the Markdown table and plots."""

import json
import os

import pytest

from s3prl_plugins.eval.report.report import (
    build_report,
    format_report,
    loss_curves,
    plot_loss_curves,
    plot_tradeoff,
    superb_metrics,
    write_markdown,
)


def _superb_exp(root, name, split, metrics):
    d = root / name
    d.mkdir(parents=True)
    (d / f"superb_{split}.json").write_text(json.dumps({"split": split, "superb": metrics}))
    return d


def test_superb_results_gathered_from_runner_experiments(tmp_path):
    root = tmp_path / "superb"
    _superb_exp(root, "ks", "test", {"KS": 96.27})
    _superb_exp(root, "asr", "test-clean", {"ASR": 9.35})
    _superb_exp(root, "asr_dev", "dev-clean", {"ASR": 8.0})  # a dev result is not a test result
    assert superb_metrics(str(root)) == {"KS": 96.27, "ASR": 9.35}
    report = build_report({}, {}, superb={"star": str(root)}, asr5k={}, rtf=False)
    r = report["star"]
    assert r["superb_partial_overall"] == pytest.approx((96.27 + 100 - 9.35) / 2) and "PR" in r["superb_missing"]
    assert r.get("superb_overall") is None and r["superb_partial"].startswith("mean of 2/11 metrics: ASR, KS")
    md = write_markdown(report, str(tmp_path / "report.md"))
    text = open(md).read()
    assert "(mean of 2/11: ASR, KS)" in text and "(mean of 2/10: ASR, KS)" in text  # not an "Overall" of 2 tasks
    _superb_exp(root, "ks2", "test", {"KS": 90.0})
    with pytest.raises(ValueError, match="KS is given twice"):
        superb_metrics(str(root))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="looked for superb_test.json"):
        superb_metrics(str(tmp_path / "empty"))
    (tmp_path / "results.json").write_text(json.dumps({"ASV": 200}))
    with pytest.raises(ValueError, match="outside 0..100"):
        build_report({}, {}, superb={"x": str(tmp_path / "results.json")}, rtf=False)


def test_loss_curves_read_with_tensorboard_and_plotted(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    for step in range(0, 50, 10):
        w.add_scalar("train/loss", 10.0 / (step + 1), step)
        w.add_scalar("train/lr", 0.1, step)
    w.close()
    w = SummaryWriter(str(tmp_path / "tb"))  # a resumed run appends a second event file, rewriting step 40
    w.add_scalar("train/loss", 0.5, 40)
    w.add_scalar("train/loss", 0.1, 50)
    w.close()
    curves = loss_curves(str(tmp_path / "tb"))
    assert list(curves) == ["train/loss"]
    steps = [s for s, _ in curves["train/loss"]]
    assert steps == [0, 10, 20, 30, 40, 50] and dict(curves["train/loss"])[50] == pytest.approx(0.1)
    png = plot_loss_curves({"a": curves, "b": curves}, str(tmp_path / "loss.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no TensorBoard event files"):
        loss_curves(str(tmp_path / "empty"))


def test_markdown_table_and_tradeoff(tmp_path):
    report = {
        "teacher": {
            "params": 94_700_000,
            "gmacs_per_second": 7.42,
            "gmacs_c_per_second": 5.0,
            "frame_rate_hz": 50.0,
            "rtf_cpu": 0.05,
            "probe_per": 0.054,
            "superb": {"PR": 5.41},
            "superb_overall": 94.59,
            "superb_generalizability": 976.0,
        },
        "student": {
            "params": 22_310_000,
            "gmacs_per_second": 2.06,
            "gmacs_c_per_second": 1.0,
            "frame_rate_hz": 50.0,
            "rtf_cpu": 0.02,
            "probe_per": 0.0816,
            "asr5k_wer": 12.3,
        },
    }
    png = plot_tradeoff(report, str(tmp_path / "tradeoff.png"))
    assert png and os.path.getsize(png) > 1000
    md = write_markdown(report, str(tmp_path / "report.md"), "Test", {"Trade-off": png, "absent": None})
    text = open(md).read()
    assert "| teacher | 94.700 | 7.420 | 5.000 | 50.0 | 0.0500 | 5.4 | 5.41 | 94.59 | 976 | - |" in text
    assert "| student | 22.310 | 2.060 | 1.000 | 50.0 | 0.0200 | 8.2 | - | - | - | 12.3 |" in text
    assert "![Trade-off](tradeoff.png)" in text and "absent" not in text
    table = format_report(report)
    assert "S-PR" in table and "ASR-5k" in table and "12.3%" in table
    assert plot_tradeoff({"only": report["student"]}, str(tmp_path / "none.png")) is None


def test_a_model_keeps_its_colour_in_every_panel():
    """The points are drawn sorted by x, so the order differs between panels; the colour must not."""
    from s3prl_plugins.eval.plots import colors_by_name, pyplot
    from s3prl_plugins.eval.report.report import _scatter_labelled

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2)
    colors = colors_by_name(["teacher", "student", "cif"])
    _scatter_labelled(a, [("teacher", 3.0, 1.0), ("student", 1.0, 2.0), ("cif", 2.0, 3.0)], colors)
    _scatter_labelled(b, [("teacher", 1.0, 1.0), ("student", 3.0, 2.0), ("cif", 2.0, 3.0)], colors)

    def by_name(ax):
        names = [t.get_text() for t in ax.texts]
        return {n: tuple(c.get_facecolor()[0]) for n, c in zip(names, ax.collections)}

    assert by_name(a) == by_name(b)
    assert len(set(by_name(a).values())) == 3
    plt.close(fig)


def test_labels_of_coinciding_points_are_stacked_and_latency_is_a_column(tmp_path):
    """Three students of one size sit on one point of the parameter axis: their labels go one line apart, not over
    each other; a report with measured RTFs gets a latency column, where an int8 graph differs from its source."""
    from s3prl_plugins.eval.plots import colors_by_name, pyplot
    from s3prl_plugins.eval.report.report import _scatter_labelled

    plt = pyplot()
    fig, ax = plt.subplots()
    names = ["star_tiny", "distilhubert_tiny", "star_tiny_int8", "teacher"]
    _scatter_labelled(
        ax,
        [
            ("star_tiny", 0.48, 30.6),
            ("distilhubert_tiny", 0.48, 30.5),
            ("star_tiny_int8", 0.48, 30.4),
            ("teacher", 2.0, 26.0),
        ],
        colors_by_name(names),
    )
    offsets = {t.get_text(): t.xyann for t in ax.texts}
    assert len({offsets[n] for n in names[:3]}) == 3 and offsets["teacher"] == (4, 4)
    plt.close(fig)
    row = dict(params=480_000, gmacs_per_second=0.1, gmacs_c_per_second=0.05, frame_rate_hz=50.0, probe_per=0.3)
    report = {"star": dict(row, rtf_cpu=0.02), "star_int8": dict(row, rtf_cpu=0.012, probe_per=0.302)}
    png = plot_tradeoff(report, str(tmp_path / "t.png"))
    from PIL import Image

    width, height = Image.open(png).size
    assert width / height > 4  # three panels side by side: 16.5 x 3.6 inches (two were 11 x 3.6)


def test_compression_report_takes_the_glob_a_demo_leaves(tmp_path):
    """Issue 33 item 8: after make demo, ``--chains exp/compress/*`` matches base/ (the shared measurement) and
    report/ (the last report) too: both are passed over, a folder that is none of these is named."""
    import glob

    from s3prl_plugins.bin.compression_report import main

    root = tmp_path / "compress"
    (root / "heads").mkdir(parents=True)
    rows = [
        {
            "iteration": 0,
            "name": "00_base",
            "method": "none",
            "attention_heads": 16,
            "per": 30.0,
            "macs_nonzero_per_second": 2e8,
            "params_nonzero": 1e6,
        },
        {
            "iteration": 1,
            "name": "01_heads1",
            "method": "heads",
            "attention_heads": 12,
            "per": 31.0,
            "macs_nonzero_per_second": 1.8e8,
            "params_nonzero": 9e5,
        },
    ]
    (root / "heads" / "trajectory.json").write_text(json.dumps(rows))
    (root / "base").mkdir()
    (root / "base" / "metrics.json").write_text(json.dumps(rows[0]))
    out = str(root / "report")
    assert main(["--chains", *sorted(glob.glob(str(root / "*"))), "--out", out]) == 0
    assert os.path.isfile(os.path.join(out, "report.md"))
    # the base point is said to be the model before any recovery training (it is no pruned model's equal)
    with open(os.path.join(out, "report.md")) as f:
        assert "first row is the model before any recovery training" in f.read()
    assert main(["--chains", *sorted(glob.glob(str(root / "*"))), "--out", out]) == 0  # report/ itself now matches
    (root / "typo").mkdir()
    assert main(["--chains", str(root / "heads"), str(root / "typo"), "--out", out]) == 2
    assert main(["--chains", str(root / "base"), "--out", out]) == 2  # no chain at all
