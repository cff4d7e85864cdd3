"""A stand-in ``python`` for recipe tests: the template's queries (bin/inspect) go to the real interpreter;
every other command is a job that is traced, sleeps, writes a placeholder output, and fails on request."""

STUB = """#!{python}
# a stand-in for python: the template's queries (bin/inspect) go to the real one; every other command is a
# job, traced as "start NAME t threads pid" / "end NAME t" and failing when its module is in $FAIL
import os, signal, sys, time
if sys.argv[1:3] == ["-m", "s3prl_plugins.bin.inspect"]:
    os.execv({python!r}, [{python!r}] + sys.argv[1:])
module = sys.argv[2].rsplit(".", 1)[-1]
out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
out = next((a.split("=", 1)[1] for a in sys.argv if a.startswith(("trainer.exp_dir=", "exp_dir="))), out)
name = module + ":" + str(out)
trace = os.environ["TRACE"]
with open(trace, "a") as f:
    f.write(f"start {{name}} {{time.time()}} {{os.environ.get('OMP_NUM_THREADS', '-')}} {{os.getpid()}}\\n")
print("the stand-in runs", name, flush=True)


def stop(signum, frame):  # a stopped job's last words, as a training's "interrupted at step N ..."
    print("the stand-in stops", name, flush=True)
    sys.exit(143)


signal.signal(signal.SIGTERM, stop)
time.sleep(float(os.environ.get("SLEEP", "1")))
if module in os.environ.get("FAIL", "").split():
    print("the reason it broke", file=sys.stderr)
    sys.exit(3)
os.makedirs(out, exist_ok=True)  # what the job writes: the targets or the model
open(os.path.join(out, "model.pt" if module in ("pretrain", "distill") else "train.km"), "w").close()
with open(trace, "a") as f:
    f.write(f"end {{name}} {{time.time()}}\\n")
"""
