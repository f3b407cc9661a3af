# TMKD companion. `make test` and `make reproduce` set themselves up on a fresh clone.
#   make setup      .venv with the pinned environment (once; a stamp file skips it later)
#   make test       pytest + every notebook under nbval (smoke profile), < 10 min on 2 CPU cores
#   make reproduce  the plan (every teacher, cache and student run, JOBS=2 workers, live progress
#                   and time left), then the five notebooks (PROFILE=cpu by default; PROFILE=quick
#                   for a first look; STUDY=mine.json, a study file, under build/study-mine/)
#                   -> figures/, figures/tables/, notebooks/executed/*.ipynb
#                   (with their outputs) and notebooks/executed/report.html
#   make report     notebooks/executed/report.html from the committed executed notebooks (seconds)
#   make bench      step-time benchmark -> figures/tables/bench.md
#   make tune       validation-only search (TMKD and KD) -> figures/tables/tuning_*.csv, tuned_*.md
#   make lab        JupyterLab on notebooks/: click a notebook (.py files open as notebooks)
#   make clean      remove build/ (nbval copies, smoke outputs, screenshots); `make clean-cache`
#                   also removes checkpoints, caches and runs
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= cpu
# a study of your own (docs/scale-out.md): STUDY=mine.json replaces PROFILE, writing under
# build/study-mine/ (never a profile's folder); its notebooks rerun when the file changes
STUDY ?=
ifneq ($(STUDY),)
ifeq ($(filter %.json,$(STUDY)),)
$(error STUDY=$(STUDY): a study file ends in .json (docs/scale-out.md))
endif
endif
SPEC := $(or $(STUDY),$(PROFILE))
OUT_NAME := $(if $(STUDY),study-$(basename $(notdir $(STUDY))),$(PROFILE))
COMMITTED := $(if $(STUDY),,$(filter cpu,$(PROFILE)))
JOBS ?= $(or $(TMKD_JOBS),2)
# the plan's parts (default: all); PARTS="pilot main ablations" leaves out the study under way
PARTS ?=
NOTEBOOKS := 01_priors 02_teachers 03_semantic_weights 04_distillation 05_ablations
# The committed figures are the cpu profile's; any other profile or study writes under build/<name>/.
FIGURES := $(if $(COMMITTED),figures,build/$(OUT_NAME)/figures)
RESULTS := $(FIGURES)/results
# The library the notebooks compute with (a change reruns them); not the launchers.
LIB := $(filter-out tmkd_core/lab.py tmkd_core/htmlreport.py,$(wildcard tmkd_core/*.py))
EXECUTED := $(if $(COMMITTED),notebooks/executed,build/$(OUT_NAME)/executed)
# The explorer's panel needs a live kernel: executed copies keep its static figure only.
PARAMS_03_semantic_weights := -p interactive False
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMIUM := $(VENV)/.chromium
export PYTHONUNBUFFERED := 1

.PHONY: setup test plan reproduce report bench tune lab clean clean-cache data
.DELETE_ON_ERROR:
.SECONDARY:  # keep the converted notebooks under build/ipynb

setup: $(STAMP) $(FASHION)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[notebooks,test]'
	touch $@

# Fashion-MNIST (cpu profile) comes from Debian; without root, install it by hand or use
# data.download=True. The tests (smoke profile) do not need it.
$(FASHION):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST missing (the cpu profile needs it): run 'sudo apt-get install dataset-fashion-mnist'" >&2; fi

# Headless Chromium for the browser tests (tests/test_lab.py), which are skipped without it;
# tried once (the stamp), as root through apt.
$(CHROMIUM): | $(STAMP)
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null \
	  || echo "chromium could not be installed: the browser tests will be skipped" >&2; \
	else echo "Chromium missing: 'sudo apt-get install chromium' runs the browser tests (skipped without it)" >&2; fi
	@touch $@

data: setup
	$(PY) -c "from tmkd_core.config import DataConfig; from tmkd_core.data import load_splits; \
	[print(n, len(load_splits(DataConfig(name=n)).train)) for n in ('cifar10', 'imagenette64', 'fashion_mnist')]"

# nbval runs each notebook, prepared by papermill with the smoke profile, writing under
# build/smoke/ so that a test never touches the committed figures.
test: setup $(CHROMIUM) $(foreach n,$(NOTEBOOKS),build/nbval/$(n).ipynb)
	$(PY) -m pytest tests build/nbval --nbval-lax -p no:cacheprovider -rs --durations=5

build/nbval/%.ipynb: build/ipynb/%.ipynb
	@mkdir -p $(@D)
	$(VENV)/bin/papermill --prepare-only -p profile smoke -p out_dir build/smoke/figures $(PARAMS_$*) $< $@

# --- notebooks -------------------------------------------------------------------------------
# jupytext .py -> .ipynb, papermill executes it into notebooks/executed/ (kept with its
# outputs for readers); the results JSON is the file that Make tracks.
build/ipynb/%.ipynb: notebooks/%.py | setup
	@mkdir -p $(@D)
	$(VENV)/bin/jupytext --quiet --to ipynb --output $@ $<

$(RESULTS)/%.json: build/ipynb/%.ipynb $(LIB) $(STUDY) | plan
	@mkdir -p $(EXECUTED)
	$(VENV)/bin/papermill --cwd . -p profile $(SPEC) -p out_dir $(FIGURES) $(PARAMS_$*) $< $(EXECUTED)/$*.ipynb

# Later notebooks read what earlier ones computed (teachers, runs) through the data/ caches.
$(RESULTS)/02_teachers.json: $(RESULTS)/01_priors.json
$(RESULTS)/03_semantic_weights.json: $(RESULTS)/02_teachers.json
$(RESULTS)/04_distillation.json: $(RESULTS)/03_semantic_weights.json
$(RESULTS)/05_ablations.json: $(RESULTS)/04_distillation.json

$(EXECUTED)/report.html: $(foreach n,$(NOTEBOOKS),$(RESULTS)/$(n).json) tmkd_core/htmlreport.py
	$(PY) -m tmkd_core.htmlreport $(foreach n,$(NOTEBOOKS),$(EXECUTED)/$(n).ipynb) -o $@

# Every run the notebooks read, trained first by worker processes with live progress and an
# estimate of the time left; interrupted, it resumes where it stopped. Fast when all is done.
plan: setup
	$(PY) -m tmkd_core.plan $(if $(STUDY),--study $(STUDY),--profile $(PROFILE)) --jobs $(JOBS) $(if $(PARTS),--parts $(PARTS))

reproduce: setup plan $(EXECUTED)/report.html
	@echo "figures and tables are in $(FIGURES)/ and $(FIGURES)/tables/; executed notebooks and report.html in $(EXECUTED)/"

# report.html from the executed notebooks as they are (committed for the cpu profile), in seconds
report: setup
	$(PY) -m tmkd_core.htmlreport $(foreach n,$(NOTEBOOKS),$(EXECUTED)/$(n).ipynb) -o $(EXECUTED)/report.html

# Step time of CE, KD, TMKD online and TMKD cached (the quick profile's teachers, which
# have the cpu profile's architectures, are trained first if absent: minutes).
BENCH_PROFILE ?= quick
bench: setup
	$(PY) -m tmkd_core.bench --profile $(BENCH_PROFILE)

# Validation-only search for TMKD and KD, then the chosen settings on the test split.
TUNE_DATASET ?= cifar10
TUNE_TRIALS ?= 8
tune: setup
	$(PY) -m tmkd_core.tune --profile $(PROFILE) --dataset $(TUNE_DATASET) --trials $(TUNE_TRIALS) $(TUNE_ARGS)

# jupyter/lab/settings/overrides.json makes the jupytext .py notebooks open as notebooks.
lab: setup
	$(PY) -m tmkd_core.lab

clean:
	rm -rf build
	@echo "kept data/ (datasets, teacher checkpoints, caches, runs); 'make clean-cache' removes the computed ones"

clean-cache: clean
	@echo "removing data/checkpoints, data/cache and data/runs; the cpu profile still restores its finished teachers and runs from artefacts/cpu (remove its checkpoints/, runs/ and partial/ too to retrain everything)"
	rm -rf data/checkpoints data/cache data/runs
