"""Memory of long inputs through the interfaces users call: the torch expert (``s3prl.hub``'s entry for our
checkpoint) and ``onnx_local`` on the exported graph, whole and in windows (``window_seconds``, the default).

Each case runs in a fresh process (peak resident memory is a per-process high-water mark) on random weights of a
preset, with a clip of noise of the given length; the table gives the peak RSS of the process (the model, the
runtime and the states included) and the wall time.

    python bench/bench_long_input.py                                   # hubert_base: 60 s and 600 s
    python bench/bench_long_input.py --preset star_hubert --seconds 60 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CASE = """
import json, resource, sys, time, torch
import s3prl.hub as hub
entry, path, seconds, window = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(2)
kw = {"window_seconds": window} if entry == "onnx_local" else {}
expert = getattr(hub, entry)(ckpt=path, **kw)
wav = torch.randn(int(16000 * seconds), generator=torch.Generator().manual_seed(0)) * 0.1
t = time.perf_counter()
with torch.inference_mode():
    out = expert([wav])["hidden_states"]
took = time.perf_counter() - t
print(json.dumps({"frames": out[-1].shape[1], "seconds": took,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="hubert_base")
    p.add_argument("--seconds", type=float, nargs="+", default=[60.0, 600.0])
    p.add_argument("--whole-onnx-up-to", type=float, default=60.0, help="longest clip run through the whole graph")
    args = p.parse_args(argv)
    import torch

    from s3prl_plugins.deploy.onnx import to_onnx
    from s3prl_plugins.models import build_model
    from s3prl_plugins.models.checkpoint import save_checkpoint
    from s3prl_plugins.models.factories import preset_config

    torch.manual_seed(0)
    model = build_model(preset_config(args.preset)).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, f"{args.preset}.pt")
        save_checkpoint(ckpt, model)
        graph = os.path.join(tmp, f"{args.preset}.onnx")
        to_onnx(model, graph)
        for seconds in args.seconds:
            torch_entry = "melhubert_local" if model.config.frontend == "logmel" else "star_hubert_local"
            cases = [(torch_entry, ckpt, 0.0), ("onnx_local", graph, 30.0)]
            if seconds <= args.whole_onnx_up_to:
                cases.append(("onnx_local", graph, 0.0))
            for entry, path, window in cases:
                name = entry if entry != "onnx_local" else f"onnx_local window_seconds={window:g}"
                t = time.perf_counter()
                r = subprocess.run(
                    [sys.executable, "-c", CASE, entry, path, str(seconds), str(window)],
                    capture_output=True,
                    text=True,
                )
                if r.returncode != 0:
                    print(r.stderr[-2000:], file=sys.stderr)
                    return 1
                res = json.loads(r.stdout.strip().splitlines()[-1])
                rows.append({"case": name, "clip_s": seconds, **res, "process_s": time.perf_counter() - t})
                print(
                    f"{args.preset} {name:32s} {seconds:6.0f} s clip: peak {res['peak_mib']:8.0f} MiB, "
                    f"{res['seconds']:6.1f} s, {res['frames']} frames",
                    flush=True,
                )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
