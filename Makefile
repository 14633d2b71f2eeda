# The commands the README shows. `make demo` and `make test` create the
# environment on first use (.venv, CPU-friendly pinned torch) and reuse it after.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned together in every install command: an unpinned
# dependency (open_clip needs torchvision) would otherwise pull another torch build.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1

.PHONY: setup demo demo-photos test test-slow test-all bench lint toyworld toyworld-pack toyworld-bench toyworld-encoder evaluate

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev,deepspeed]" $(TORCH_PIN)
	touch $@

setup: $(VENV)/.installed

# The demo: personalize toy-bo on the pretrained toy-world backbone (shipped in the repository),
# where held-out recognition and text QA can show that the soft tokens learnt something.
demo: setup
	$(PY) -m yochameleon.train +concept=toy-bo run_name=demo-$$(date +%Y%m%d-%H%M%S)

# The real-photo pipeline check: the DreamBooth corgi on the tiny random Chameleon (chance-level scores).
demo-photos: setup
	$(PY) -m yochameleon.train +concept=demo run_name=demo-$$(date +%Y%m%d-%H%M%S)

# The toy-world backbone: pretrained once (~40 min on 2 cores) and cached, or unpacked from
# yochameleon/assets/toyworld/toyworld.safetensors when one is shipped; prints what it knows.
toyworld: setup
	$(PY) -m yochameleon.toyworld.build

toyworld-pack: toyworld
	$(PY) -m yochameleon.toyworld.ship

# Every 3S recipe and two prompting baselines on the five toy concepts, seeds 0 1 2 (hours on 2 cores):
# held-out recognition, text QA, judged generation; mean and 95% CI, paired tests, the paper's claims judged.
# `make toyworld-bench TOYBENCH_OUT=<the same folder>` resumes an interrupted one (docs/benchmarks.md).
TOYBENCH_OUT ?= outputs/toyworld-benchmark-$$(date +%Y%m%d-%H%M%S)
toyworld-bench: toyworld
	$(PY) benchmarks/toy_recipes.py --out $(TOYBENCH_OUT)

# The fast suite (every component, under 10 minutes on 2 cores) and the slow one (end-to-end runs,
# multi-process DDP/DeepSpeed, the toy-world quality gate, a non-editable install). CI runs both.
test: setup
	$(PY) -m pytest -q -m "not slow"

test-slow: setup
	$(PY) -m pytest -q -m slow

test-all: test test-slow

bench: setup
	$(PY) benchmarks/image_sampling.py
	$(PY) benchmarks/image_sampling.py --model janus-tiny
	$(PY) benchmarks/backbone_memory.py
	$(PY) benchmarks/train_step.py --size tiny

# ruff is pinned in the dev extra; its rules are pyproject.toml's [tool.ruff] (seconds).
lint: setup
	$(VENV)/bin/ruff check yochameleon evaluation tests hydra_plugins benchmarks

# The toy world's concept encoder (issue 27): trained across its 144 identities (24 validation identities
# choose it, 24 test identities, the 5 toy concepts' among them, are scored once), then copied into the
# package as yochameleon/assets/toyworld/encoder (docs/encoder.md; about 45 min on 2 cores).
toyworld-encoder: setup
	OMP_NUM_THREADS=1 $(PY) -m yochameleon.train_encoder run_name=toyworld-encoder encoder.feature_layer=2
	$(PY) -m yochameleon.toyworld.encoder_pack outputs/encoders/toyworld-encoder/best
