# gcdr: every stage is `python -m pipelines.<stage>`; these targets pass the Make variables on.
# Variables (all optional): CONFIG DATA OUT RATIO SEED SPLIT T STEPS SAMPLES SRC METHOD MEAN_TEACHER
#                           STUDENT PSEUDO EPOCHS CKPT IMAGES HEADS VS QUICK JOBS SET
# SET="key.sub=value key2=value2": any config overrides, each passed as --set to every stage (after the
# variables above, so it wins); space-separated, so a value cannot contain spaces (use a config file then).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/synthgaze.yaml
NPROC  ?= 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# Make variables -> config overrides (only those given)
SETS := $(if $(DATA),--set dataset.root=$(DATA)) \
        $(if $(OUT),--set out_root=$(OUT)) \
        $(if $(RATIO),--set split.ratio=$(RATIO)) \
        $(if $(SEED),--set split.seed=$(SEED)) \
        $(if $(SPLIT),--set gradcam.split=$(SPLIT)) \
        $(if $(T),--set refine.T=$(T)) \
        $(if $(STEPS),--set refine.steps=$(STEPS)) \
        $(if $(SAMPLES),--set refine.samples=$(SAMPLES)) \
        $(if $(METHOD),--set refine.method=$(METHOD)) \
        $(if $(MEAN_TEACHER),--set teacher.mean_teacher=$(MEAN_TEACHER)) \
        $(if $(STUDENT),--set student.model=$(STUDENT)) \
        $(if $(EPOCHS),--set student.epochs=$(EPOCHS)) \
        $(foreach s,$(SET),--set $(s))
RUN := $(PY) -m
# NPROC>1: split gradcam / refine / training across processes (or GPUs) with accelerate
LAUNCH := $(if $(filter 1,$(NPROC)),$(RUN),$(VENV)/bin/accelerate launch --multi_gpu --num_processes $(NPROC) -m)
ARGS := --config $(CONFIG) $(SETS)

.PHONY: install test lint demo demo-smoke data-synth split synth-vqa gradcam train-teacher refine \
        train-student eval predict export inspect bench ablation clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: install
	$(PY) -m ruff check gcdr gcdr_tools pipelines tests

data-synth: install
	$(RUN) pipelines.data_synth $(ARGS)

split: install
	$(RUN) pipelines.split $(ARGS)

synth-vqa: install
	$(RUN) pipelines.synth_vqa $(ARGS)

gradcam: install
	$(LAUNCH) pipelines.gradcam $(ARGS)

train-teacher: install
	$(LAUNCH) pipelines.train_teacher $(ARGS)

refine: install
	$(LAUNCH) pipelines.refine $(ARGS) $(if $(SRC),--src $(SRC))

train-student: install
	$(LAUNCH) pipelines.train_student $(ARGS) $(if $(PSEUDO),--pseudo $(PSEUDO))

eval: install
	$(RUN) pipelines.evaluate $(ARGS) --ckpt $(CKPT)

predict: install
	$(RUN) pipelines.predict $(ARGS) --ckpt $(CKPT) --images $(IMAGES) --heads $(HEADS)

# OUT here is the exported file (not out_root): VAT / gazelle's own checkpoint layout
export: install
	$(RUN) pipelines.export --ckpt $(CKPT) --format official $(if $(OUT),--out $(OUT))

inspect: install
	$(RUN) pipelines.inspect $(ARGS) --pseudo $(PSEUDO) $(foreach v,$(VS),--vs $(v))

bench: install
	$(RUN) pipelines.bench $(ARGS) $(if $(QUICK),--quick)

ablation: install
	$(RUN) pipelines.ablation $(ARGS) $(if $(JOBS),--jobs $(JOBS))

demo: install
	$(RUN) pipelines.demo $(ARGS) $(if $(JOBS),--jobs $(JOBS))

demo-smoke: install
	$(RUN) pipelines.demo $(ARGS) --smoke $(if $(JOBS),--jobs $(JOBS))

clean:
	rm -rf outputs data/synthgaze data/synth_vqa
