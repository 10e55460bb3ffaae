# gcdr: every stage is `python -m pipelines.<stage>`; these targets pass the Make variables on.
# Variables (all optional; each target accepts only those it uses, any other one is an error):
#   CONFIG DATA OUT RATIO SEED SPLIT T STEPS SAMPLES SRC METHOD MEAN_TEACHER STUDENT PSEUDO EPOCHS CKPT
#   IMAGES HEADS VQA TEACHER VS QUICK JOBS RESTART SET NPROC
# RESTART=1: empty the stage's output folder and start over (the way out when it holds another request's output).
# SET="key.sub=value key2=value2": any config overrides, each passed as --set to the stage (after the
# variables above, so it wins); space-separated, so a value cannot contain spaces (use a config file then).
# IMAGES=<folder> HEADS=<file(s) or folder>: your own frames with head-box files (README "Your own images"):
# the dataset becomes that folder and outputs go to outputs/images/<folder name> unless OUT is given.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/synthgaze.yaml
NPROC  ?= 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# Own images: a head-box dataset over IMAGES, written under outputs/images/<name of the folder>
comma := ,
empty :=
space := $(empty) $(empty)
IMAGE_SETS := $(if $(IMAGES),--set dataset.format=headboxes --set dataset.root=$(abspath $(IMAGES)) \
        --set dataset.images_dir=. --set dataset.heads=[$(subst $(space),$(comma),$(strip $(abspath $(HEADS))))] \
        $(if $(OUT),,--set out_root=outputs/images/$(notdir $(abspath $(IMAGES)))))

# Make variables -> config overrides (only those given)
SETS := $(IMAGE_SETS) \
        $(if $(DATA),--set dataset.root=$(DATA)) \
        $(if $(OUT),--set out_root=$(OUT)) \
        $(if $(RATIO),--set split.ratio=$(RATIO)) \
        $(if $(SEED),--set split.seed=$(SEED)) \
        $(if $(SPLIT),--set gradcam.split=$(SPLIT)) \
        $(if $(T),--set refine.T=$(T)) \
        $(if $(STEPS),--set refine.steps=$(STEPS)) \
        $(if $(SAMPLES),--set refine.samples=$(SAMPLES)) \
        $(if $(METHOD),--set refine.method=$(METHOD)) \
        $(if $(TEACHER),--set refine.teacher=$(TEACHER)) \
        $(if $(VQA),--set vqa.model=$(VQA)) \
        $(if $(MEAN_TEACHER),--set teacher.mean_teacher=$(MEAN_TEACHER)) \
        $(if $(STUDENT),--set student.model=$(STUDENT)) \
        $(if $(EPOCHS),--set student.epochs=$(EPOCHS)) \
        $(foreach s,$(SET),--set $(s))

# $(call uses,VARS): stop with one line when a variable given to make is not one this target uses
# (a typo or a variable of another stage would otherwise be silently ignored).
STAGE_VARS := DATA OUT RATIO SEED SPLIT T STEPS SAMPLES SRC METHOD MEAN_TEACHER STUDENT PSEUDO EPOCHS CKPT \
              IMAGES HEADS VQA TEACHER VS QUICK JOBS RESTART
given = $(foreach v,$(STAGE_VARS),$(if $(filter command line,$(origin $(v))),$(v)))
uses = $(if $(filter-out $(1),$(given)),$(error make $@ does not use $(filter-out $(1),$(given)); it takes \
       $(or $(strip $(1)),no variables) (and CONFIG, SET, NPROC)))
RUN := $(PY) -m
# NPROC>1: split gradcam / refine / training across processes (or GPUs) with accelerate
LAUNCH := $(if $(filter 1,$(NPROC)),$(RUN),$(VENV)/bin/accelerate launch --multi_gpu --num_processes $(NPROC) -m)
ARGS := --config $(CONFIG) $(SETS)
RESTART_ARG = $(if $(filter-out 0,$(RESTART)),--restart)

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
	$(call uses,DATA OUT RESTART)
	$(RUN) pipelines.data_synth $(ARGS) $(RESTART_ARG)

split: install
	$(call uses,DATA OUT RATIO SEED RESTART)
	$(RUN) pipelines.split $(ARGS) $(RESTART_ARG)

synth-vqa: install
	$(call uses,DATA OUT VQA RESTART)
	$(RUN) pipelines.synth_vqa $(ARGS) $(RESTART_ARG)

gradcam: install
	$(call uses,DATA OUT RATIO SEED SPLIT IMAGES HEADS VQA RESTART)
	$(LAUNCH) pipelines.gradcam $(ARGS) $(RESTART_ARG)

train-teacher: install
	$(call uses,DATA OUT RATIO SEED MEAN_TEACHER RESTART)
	$(LAUNCH) pipelines.train_teacher $(ARGS) $(RESTART_ARG)

refine: install
	$(call uses,DATA OUT RATIO SEED SPLIT T STEPS SAMPLES METHOD SRC TEACHER IMAGES HEADS RESTART)
	$(LAUNCH) pipelines.refine $(ARGS) $(if $(SRC),--src $(SRC)) $(RESTART_ARG)

train-student: install
	$(call uses,DATA OUT RATIO SEED STUDENT PSEUDO EPOCHS RESTART)
	$(LAUNCH) pipelines.train_student $(ARGS) $(if $(PSEUDO),--pseudo $(PSEUDO)) $(RESTART_ARG)

eval: install
	$(call uses,DATA OUT RATIO SEED STUDENT CKPT)
	$(RUN) pipelines.evaluate $(ARGS) --ckpt $(CKPT)

predict: install
	$(call uses,CKPT IMAGES HEADS OUT)
	$(RUN) pipelines.predict $(ARGS) --ckpt $(CKPT) --images $(IMAGES) --heads $(HEADS)

# OUT here is the exported file (not out_root): VAT / gazelle's own checkpoint layout
export: install
	$(call uses,CKPT OUT)
	$(RUN) pipelines.export --ckpt $(CKPT) --format official $(if $(OUT),--out $(OUT))

inspect: install
	$(call uses,DATA OUT RATIO SEED SPLIT PSEUDO VS IMAGES HEADS)
	$(RUN) pipelines.inspect $(ARGS) --pseudo $(PSEUDO) $(foreach v,$(VS),--vs $(v))

bench: install
	$(call uses,QUICK)
	$(RUN) pipelines.bench $(ARGS) $(if $(QUICK),--quick)

ablation: install
	$(call uses,OUT JOBS)
	$(RUN) pipelines.ablation $(ARGS) $(if $(JOBS),--jobs $(JOBS))

demo: install
	$(call uses,OUT JOBS)
	$(RUN) pipelines.demo $(ARGS) $(if $(JOBS),--jobs $(JOBS))

demo-smoke: install
	$(call uses,OUT JOBS)
	$(RUN) pipelines.demo $(ARGS) --smoke $(if $(JOBS),--jobs $(JOBS))

clean:
	rm -rf outputs data/synthgaze data/synth_vqa
