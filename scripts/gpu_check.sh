#!/usr/bin/env bash
# The prepared GPU check for a session with a device machine. NOT YET RUN ON A GPU.
#
# Here (CPU machine):   scripts/gpu_check.sh prepare
#   builds the release binaries and puts what the GPU machine needs (SmolLM2's config and
#   tokenizer, no weights) under .cache/gpu/; carry `target/release/worker`,
#   `target/release/coordinator` and `.cache/gpu` (about 45 MB together).
# There (device run):   scripts/gpu_check.sh run
#   uses the machine's own torch 2.11.0+cu130 (libtorch, CUDA and NCCL libraries) and prints:
#   NCCL load / unique id / one-rank collectives with timings, generation and training speed of a
#   SmolLM2-shaped model with random weights on the GPU, and a tiny 2-iteration airlift run with
#   workers.device = "cuda" (learner and rollout worker share GPU 0; NCCL world of 1).
set -euo pipefail
cd "$(dirname "$0")/.."
W=target/release/worker
C=target/release/coordinator

case "${1:-}" in
prepare)
  make build
  mkdir -p .cache/gpu/smol
  cp .cache/models/SmolLM2-135M-Instruct/{config.json,tokenizer.json,tokenizer_config.json} .cache/gpu/smol/
  du -sh $W $C .cache/gpu
  ;;
run)
  SITE=$(python3 -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  LINKS=$(mktemp -d)
  ln -s "$SITE/nvidia/nccl/lib/libnccl.so.2" "$LINKS/libnccl.so"   # cudarc loads `libnccl.so`
  export LD_LIBRARY_PATH="$LINKS:$SITE/torch/lib:$(echo "$SITE"/nvidia/*/lib "$SITE"/nvidia/cu13/lib 2>/dev/null | tr ' ' :)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export RUST_BACKTRACE=0
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  echo "== 1. NCCL"
  $W nccl-check --values $((64 << 20))
  echo "== 2. SmolLM2 shape, random weights, on the GPU"
  $W random-model --tokenizer-from .cache/gpu/smol --config-from .cache/gpu/smol --out /tmp/smol-random
  $W bench --device cuda --model /tmp/smol-random --batches 1,16,64 --train-batch 8 --train-seq 256 --train-steps 3
  echo "== 3. a tiny airlift run on CUDA"
  $W random-model --tokenizer-from .cache/gpu/smol --out /tmp/tiny
  RUN=$(mktemp -d)
  cat > "$RUN/tiny.toml" <<TOML
[run]
name = "gpu-check"
dir = "$RUN/run"
iterations = 2
[workers]
rollout = 1
learner = 1
device = "cuda"
[model]
policy = "/tmp/tiny"
[data]
prompts_per_iteration = 8
samples_per_prompt = 2
prompts_per_task = 4
eval_prompts = 4
[sampling]
max_new_tokens = 32
[reward]
discriminator = "logit"
warm_start_steps = 2
[sft]
steps = 2
batch = 4
TOML
  CUDA_VISIBLE_DEVICES=0 $C --config "$RUN/tiny.toml" --local 2>"$RUN/coordinator.log" || { tail -n 20 "$RUN/coordinator.log"; tail -n 20 "$RUN"/run/logs/*.log; exit 1; }
  grep -h "NCCL communicator" "$RUN"/run/logs/learner-0.log || true
  ;;
*)
  echo "usage: scripts/gpu_check.sh prepare|run" >&2
  exit 2
  ;;
esac
