# TMKD companion. `make test` and `make reproduce` set themselves up on a fresh clone.
#   make setup      .venv with the pinned environment (once; a stamp file skips it later)
#   make test       pytest + every notebook under nbval (smoke profile), < 10 min on 2 CPU cores
#   make reproduce  run the five notebooks (PROFILE=cpu by default) -> figures/ and figures/tables/
#   make bench      step-time benchmark -> figures/tables/bench.md
#   make tune       validation-only search (TMKD and KD) -> figures/tables/tuning_*.csv, tuned_*.md
#   make lab        JupyterLab with jupytext: open notebooks/*.py as notebooks
#   make clean      remove executed notebooks; `make clean-cache` also removes checkpoints/caches
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= cpu
NOTEBOOKS := 01_priors 02_teachers 03_semantic_weights 04_distillation 05_ablations
FIGURES := figures
RESULTS := $(FIGURES)/results
LIB := $(wildcard tmkd_core/*.py)
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export PYTHONUNBUFFERED := 1

.PHONY: setup test reproduce bench tune lab clean clean-cache data
.DELETE_ON_ERROR:
.SECONDARY:  # keep the converted notebooks under build/ipynb

setup: $(STAMP) $(FASHION)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[notebooks,test]'
	touch $@

# Fashion-MNIST comes from Debian; without root, install it by hand or use data.download=True.
$(FASHION):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'" >&2; exit 1; fi

data: setup
	$(PY) -c "from tmkd_core.config import DataConfig; from tmkd_core.data import load_splits; \
	[print(n, len(load_splits(DataConfig(name=n)).train)) for n in ('cifar10', 'imagenette64', 'fashion_mnist')]"

# nbval runs each notebook, prepared by papermill with the smoke profile, writing under
# build/smoke/ so that a test never touches the committed figures.
test: setup $(foreach n,$(NOTEBOOKS),build/nbval/$(n).ipynb)
	$(PY) -m pytest tests build/nbval --nbval-lax -p no:cacheprovider --durations=5

build/nbval/%.ipynb: build/ipynb/%.ipynb
	@mkdir -p $(@D)
	$(VENV)/bin/papermill --prepare-only -p profile smoke -p out_dir build/smoke/figures $< $@

# --- notebooks -------------------------------------------------------------------------------
# jupytext .py -> .ipynb, papermill executes it; the results JSON is the file that Make tracks.
build/ipynb/%.ipynb: notebooks/%.py | setup
	@mkdir -p $(@D)
	$(VENV)/bin/jupytext --quiet --to ipynb --output $@ $<

$(RESULTS)/%.json: build/ipynb/%.ipynb $(LIB)
	@mkdir -p build/executed
	$(VENV)/bin/papermill --cwd . -p profile $(PROFILE) $< build/executed/$*.ipynb

# Later notebooks read what earlier ones computed (teachers, runs) through the data/ caches.
$(RESULTS)/02_teachers.json: $(RESULTS)/01_priors.json
$(RESULTS)/03_semantic_weights.json: $(RESULTS)/02_teachers.json
$(RESULTS)/04_distillation.json: $(RESULTS)/03_semantic_weights.json
$(RESULTS)/05_ablations.json: $(RESULTS)/04_distillation.json

reproduce: setup $(foreach n,$(NOTEBOOKS),$(RESULTS)/$(n).json)
	@echo "figures and tables are in $(FIGURES)/ and $(FIGURES)/tables/"

# Step time of CE, KD, TMKD online and TMKD cached (needs the cpu-profile teachers: they
# are trained first if absent).
bench: setup
	$(PY) -m tmkd_core.bench --profile $(PROFILE)

# Validation-only search for TMKD and KD, then the chosen settings on the test split.
TUNE_DATASET ?= cifar10
TUNE_TRIALS ?= 8
tune: setup
	$(PY) -m tmkd_core.tune --profile $(PROFILE) --dataset $(TUNE_DATASET) --trials $(TUNE_TRIALS)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf build
	@echo "kept data/ (datasets, teacher checkpoints, caches, runs); 'make clean-cache' removes the computed ones"

clean-cache: clean
	@echo "removing data/checkpoints, data/cache and data/runs: the next 'make reproduce' retrains everything (~1 h on 2 CPU cores)"
	rm -rf data/checkpoints data/cache data/runs
