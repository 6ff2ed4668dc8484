# Every target uses the virtual environment at .venv (created by `make install`).
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install lock check-latest demo test mutate lint clean device-wheels table1 table2 table3 fig1 fig3 fig4 sweep

# Table targets: SMOKE=1 runs the sweep on the tiny model + smoke suite; LIMIT=n caps samples per task;
# RUNTIME=compiled runs every cell with runtime=compiled (its own run folders and table files); DATA=<folder>
# reads the real benchmarks from that local copy (data.root: scripts/download_data.py).
# The sweep skips complete runs and resumes interrupted ones; exit status 2 (bad config, missing
# weights or data, a run folder in use) stops before rendering unless FALLBACK is set (fig3: then FALLBACK's
# line is printed and the renderer decides); 1 (some sample failed) and 3 (a run's scoring failed, its answers
# kept) still render, then fail.
SWEEP_ARGS = $(if $(LIMIT),limit=$(LIMIT)) $(if $(RUNTIME),runtime=$(RUNTIME)) $(if $(DATA),data.root=$(DATA))

## Set up .venv from requirements.lock (exact versions, hashes checked), then a tiny real evaluation.
install: $(INSTALLED)

$(INSTALLED): requirements.lock pyproject.toml scripts/install_env.sh scripts/lock_diff.py
	bash scripts/install_env.sh $(VENV)
	touch $@

## Regenerate requirements.lock from pyproject.toml's ranges (uv; then make install picks it up).
lock:
	bash scripts/lock.sh

## Drift check: the newest versions pyproject.toml allows, in a scratch venv (.venv-latest), against a
## fast subset of the tests; prints which packages differ from the lock and what broke.
check-latest:
	bash scripts/check_latest.sh .venv-latest

## The wheels and clip the device check's TTFT step needs on a lent GPU machine, into .device-wheels/ (carry it).
device-wheels: $(INSTALLED)
	bash scripts/device_wheels.sh

## Main job on the built-in default: the tiny LLaVA trained offline (its checkpoint ships) on the shapes suite.
demo: $(INSTALLED)
	$(PY) run.py model=tiny_llava_trained benchmark=shapes_image

## Test suite (what CI runs): one pytest-xdist worker per core (pyproject.toml's addopts).
test: $(INSTALLED)
	$(PY) -m pytest

## Mutation testing of the pure modules (mutmut; not in CI; resumes from mutants/): results/mutation.md.
mutate: $(INSTALLED)
	$(PY) scripts/mutate.py

## The paper's Table 1: sweep (Native + 6 methods x {128, 64, 32}, then the 4 baselines it left out) then render results/tables/.
table1: $(INSTALLED)
	$(MAKE) --no-print-directory sweep EXPERIMENT=table1$(if $(SMOKE),_smoke)

## The paper's Table 2: LLaVA-Video-7B, Native + 6 methods x {64, 32, 16} tokens per frame on the video suite (+ 4 not in the paper).
table2: $(INSTALLED)
	$(MAKE) --no-print-directory sweep EXPERIMENT=table2$(if $(SMOKE),_smoke)

## The paper's Table 3: EvoPrune's ablations at 64 tokens per frame beside Native.
table3: $(INSTALLED)
	$(MAKE) --no-print-directory sweep EXPERIMENT=table3$(if $(SMOKE),_smoke)

# Figure 1 is the paper's six methods (all ten, the four it left out too: scripts/bench_latency.py --model llava_video).
FIG1_METHODS = --methods fastervlm vispruner dart divprune cdpruner evoprune
## The paper's Figure 1: LLaVA-Video-7B's component times at 1 / 8 / 64 frames, Native + six methods, from
## scripts/bench_latency.py on real-size random weights, eager and compiled side by side on CUDA, eager on a CPU
## (SMOKE=1: tiny shapes, one round; RUNTIME="eager compiled" or RUNTIME=compiled picks). Resumes after a kill.
fig1: $(INSTALLED)
	$(PY) scripts/bench_latency.py --model llava_video $(FIG1_METHODS) $(if $(SMOKE),--shapes tiny --repeats 1) \
		$(if $(RUNTIME),--runtime $(RUNTIME))

## The paper's Figure 3: TTFT per stage on Video-MME, Native + six methods at 64 tokens per frame (Table 2's runs;
## the other runtime's runs drawn beside them where they exist).
fig3: $(INSTALLED)
	$(MAKE) --no-print-directory sweep EXPERIMENT=fig3$(if $(SMOKE),_smoke) RENDER=scripts/render_fig3.py \
		FALLBACK="fig3: the sweep stopped (exit 2, see above); Figure 3 is drawn from complete runs if Native's is one, else from scripts/bench_latency.py's measurement instead"

## The paper's Figure 4: EvoPrune's six layer schedules x {16, 32, 64} tokens per frame on the video suite.
fig4: $(INSTALLED)
	$(MAKE) --no-print-directory sweep EXPERIMENT=fig4$(if $(SMOKE),_smoke) RENDER=scripts/render_fig4.py

RENDER ?= scripts/render_table.py
sweep:
	@status=0; $(PY) run.py -m +experiment=$(EXPERIMENT) $(SWEEP_ARGS) || status=$$?; \
	if [ $$status -eq 2 ] && [ -n "$(FALLBACK)" ]; then echo "$(FALLBACK)"; status=0; \
	elif [ $$status -ne 0 ] && [ $$status -ne 1 ] && [ $$status -ne 3 ]; then exit $$status; fi; \
	$(PY) $(RENDER) +experiment=$(EXPERIMENT) $(SWEEP_ARGS) && exit $$status

## Lint and format check.
lint: $(INSTALLED)
	$(VENV)/bin/ruff check evoprune baselines tests scripts run.py
	$(VENV)/bin/ruff format --check evoprune baselines tests scripts run.py

clean:
	rm -rf $(VENV) .venv-latest mutants results/runs evoprune/harness/data/tasks/smoke/data evoprune/harness/data/tasks/smoke_video/data
