# s3prl-plugins -- every target installs what it needs first (tools/setup_env.sh, reused when unchanged).
SHELL := /bin/bash
# Each target's first command sets the environment up (tools/setup_env.sh, reused when unchanged) and stops the
# target with the set-up's own error when it fails ($(shell ...) would swallow it and leave an empty $(PY)).
PY = py=$$(bash tools/setup_env.sh) && "$$py"
# This clone's code first, whatever the shared environment's editable install points at (tools/setup_env.sh).
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: python demo profile test test-slow test-all test-gpu lint format bench bench-gpu

python:            ## print the project's interpreter (creating the environment if needed)
	@bash tools/setup_env.sh

demo:              ## the main job: the mini recipe end to end (corpus + KS/SID subsets, alignments, the MelHuBERT teacher, students, a CIF student, probes, SUPERB KS through s3prl's runner, the report, head pruning of MelHuBERT; ~1 hour on 2 cores)
	@bash tools/setup_env.sh >/dev/null
	cd egs/mini && ./run.sh

profile:           ## profile the model zoo's presets (params, MACs per second of speech, RTF)
	$(PY) -m s3prl_plugins.bin.profile hubert_base distilhubert star_hubert star_hubert_l melhubert_base_10ms melhubert_base_20ms

test:              ## the default test suite (CPU, a few minutes)
	$(PY) -m pytest -q tests

lint:              ## the formatter and linter (ruff, configured in pyproject.toml); `make format` applies the formatter
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

test-slow:         ## only the long end-to-end tests (the mini recipe, the stock runner per task, ESPnet, the chain); CI runs them after `make test`
	$(PY) -m pytest -q tests --runslow -m slow

test-all:          ## include slow tests
	$(PY) -m pytest -q tests --runslow

test-gpu:          ## the CUDA tests (opt-in; needs a GPU): bf16 attention, losses under autocast, exact resume on CUDA
	$(PY) -m pytest -q tests --rungpu -m gpu

bench:             ## CPU inference benchmark: ours vs s3prl's implementations, students vs HuBERT
	$(PY) bench/bench_inference.py

bench-gpu:         ## the GPU benchmark (issue 23): updates, profiler split, inference, pruned models, transformers side by side, before/after the speed options; < 6 min on an H200; JSON in bench/results/bench_gpu.json
	$(PY) bench/bench_gpu.py --json bench/results/bench_gpu.json
