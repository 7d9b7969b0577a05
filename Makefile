# The two commands a new machine needs: `make train` and `make test` (both install on first use).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=
TABLE ?= upsamplers_resnet
# A fixed sweep directory: rerunning `make table` completes a half-finished sweep (finished jobs
# are skipped). It lies in experiments/runs/ so that its run records (results.json, CSV logs,
# configs) can be committed and a build spans sessions and machines; checkpoints and W&B files
# stay ignored (.gitignore). Pass SWEEP_DIR=... for a fresh sweep.
SWEEP_DIR ?= experiments/runs/$(TABLE)

.PHONY: install train test test-fast test-gpu lint table levers bench

install: $(STAMP)

# Re-installs only when pyproject.toml changes, so repeated make calls cost nothing.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,brain,deploy]'
	touch $(STAMP)

train: install
	$(PY) train.py $(ARGS)

# One pytest worker per core (pytest-xdist); each runs torch on one thread (tests/conftest.py).
# worksteal: an idle worker takes tests queued on the busy one, so the minute-long end-to-end
# tests do not leave a core idle at the end; the slowest tests are listed after the run.
test: install
	$(PY) -m pytest -n auto --dist worksteal --durations=15 $(ARGS)

test-fast: install
	$(PY) -m pytest -n auto --dist worksteal -m "not slow" $(ARGS)

# On a CUDA machine: every upsampler under trainer=gpu_fast and fp16 (skipped without a GPU).
test-gpu: install
	$(PY) -m pytest -m gpu $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Run an experiment's sweep (conf/experiment/$(TABLE).yaml) and build its table and plots.
# A failed job does not stop the table: it shows as failed there. A sweep stopped by a signal
# (exit status above 128: Ctrl-C, kill) builds nothing, so that a half-finished sweep never
# overwrites the committed table; rerunning continues it.
table: install
	$(PY) train.py -m experiment=$(TABLE) hydra.sweep.dir=$(SWEEP_DIR) $(ARGS); \
	  status=$$?; if [ $$status -gt 128 ]; then \
	    echo "make table: the sweep was stopped (exit status $$status); no table built" >&2; \
	    exit $$status; fi
	$(PY) -m upbench.report $(SWEEP_DIR) --out experiments/results/$(TABLE)

# The recipe levers of experiments/README.md, one family of Holm-corrected tests per baseline:
# each directory's runs (one recipe change each) against the first's, paired by setting and seed.
# Reads committed runs only. The first family: make train's config as it was before Dice x 2 was
# adopted (Dice x 1, its runs kept in experiments/runs/dice1/), seeds 0-4. The other two: the
# levers tried against runs that lose a class (class weights in CE + Dice, a doubled Dice term),
# on that config (the doubled Dice term's runs are today's default_recipe, hence NAME=DIR) and on
# the upsamplers_x_backbones cells where two runs lost the blob class (MobileNet, maxunpool and
# bilinear, seeds 0-14), and the doubled Dice term on the whole table: upsamplers_x_backbones,
# rebuilt with it (NAME=DIR: both directories are called upsamplers_x_backbones), tested per
# setting, per backbone column and on the whole table. The fourth: the table budget,
# upsamplers_resnet at 24 epochs against its first build at 16 (kept in experiments/runs/epochs16/),
# every setting, seeds 0-14: does training longer change the table's comparisons? Both are named
# by NAME=DIR, since the baseline's directory bears the name of the table that has moved on.
# The fifth: whether 24 epochs narrow SAPA's wide cell in upsamplers_segformer (seeds 0-4).
LEVER_DIRS ?= experiments/runs/dice1/default_recipe experiments/runs/probes/lever_weighted_ce experiments/runs/probes/lever_output_stride8 experiments/runs/probes/make_train_2threads
LEVERS_OUT ?= experiments/results/levers
ROBUSTNESS_DIRS ?= experiments/runs/dice1/default_recipe experiments/runs/probes/lever_cedice_weighted lever_dice2=experiments/runs/default_recipe
ROBUSTNESS_OUT ?= experiments/results/levers_robustness
TABLE_ROBUSTNESS_DIRS ?= experiments/runs/dice1/upsamplers_x_backbones experiments/runs/probes/x_backbones_cedice_weighted dice2=experiments/runs/upsamplers_x_backbones
TABLE_ROBUSTNESS_OUT ?= experiments/results/levers_robustness_x_backbones
EPOCHS_DIRS ?= epochs16=experiments/runs/epochs16/upsamplers_resnet epochs24=experiments/runs/upsamplers_resnet
EPOCHS_OUT ?= experiments/results/levers_epochs
SAPA_EPOCHS_DIRS ?= epochs16=experiments/runs/upsamplers_segformer epochs24=experiments/runs/probes/segformer_sapa_epochs24
SAPA_EPOCHS_OUT ?= experiments/results/levers_epochs_sapa
levers: install
	$(PY) -m upbench.report.levers $(LEVER_DIRS) --out $(LEVERS_OUT)
	$(PY) -m upbench.report.levers $(ROBUSTNESS_DIRS) --out $(ROBUSTNESS_OUT)
	$(PY) -m upbench.report.levers $(TABLE_ROBUSTNESS_DIRS) --out $(TABLE_ROBUSTNESS_OUT)
	$(PY) -m upbench.report.levers $(EPOCHS_DIRS) --out $(EPOCHS_OUT)
	$(PY) -m upbench.report.levers $(SAPA_EPOCHS_DIRS) --out $(SAPA_EPOCHS_OUT)

bench: install
	$(PY) benchmarks/harness_overhead.py
	$(PY) benchmarks/data_throughput.py
	$(PY) benchmarks/upsamplers.py
	$(PY) benchmarks/carafe_op.py
	$(PY) benchmarks/deploy.py
