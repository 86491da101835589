#!/usr/bin/env bash
# The prepared GPU check for a session with a device machine.
#
# Here (CPU machine):   scripts/gpu_check.sh prepare
#   builds the release binaries and puts what the GPU machine needs (SmolLM2's config and
#   tokenizer, no weights; a Qwen2.5-0.5B-shaped config) under .cache/gpu/; carry
#   `target/release/worker`, `target/release/coordinator` and `.cache/gpu` (about 45 MB).
# There (device run):   scripts/gpu_check.sh run
#   uses the machine's own torch 2.11.0+cu130 (libtorch, CUDA and NCCL libraries) and
#   transformers, and prints in one sitting on one GPU:
#   1. CUDA support and NCCL: one-rank collectives, timed after synchronising, with bandwidth;
#   2. generation, airlift (CUDA graphs; then eager) against transformers `generate`, batch
#      1/16/64/256, fp32 and bf16, 128 forced new tokens, SmolLM2 shape with random weights;
#   3. a transformers decode step profiled, fp32 against bf16;
#   4. training steps, airlift and transformers: SmolLM2 shape 8 x 256 (fp32, bf16 compute) and
#      Qwen2.5-0.5B shape 16 x 1024 (bf16 compute; airlift also with the fused LM head and the
#      fused AdamW turned off, one and both);
#   5. configs/default.toml on CUDA (random SmolLM2-shaped weights, 2 iterations) with its
#      phase times;
#   6. an evaluation job (`coordinator eval`) of 5's last checkpoint on CUDA, with its wall time;
#   7. (not in the default list) the Qwen-shaped training step alone, airlift before and after
#      transformers: a quick second sitting of 4's headline row.
set -euo pipefail
cd "$(dirname "$0")/.."
W=target/release/worker
C=target/release/coordinator

case "${1:-}" in
prepare)
  make build
  mkdir -p .cache/gpu/smol .cache/gpu/qwen
  cp .cache/models/SmolLM2-135M-Instruct/{config.json,tokenizer.json,tokenizer_config.json} .cache/gpu/smol/
  # Qwen2.5-0.5B's shape (its config.json as published), for the training-step comparison.
  cat > .cache/gpu/qwen/config.json <<'JSON'
{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
 "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
 "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
 "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151643}
JSON
  du -sh $W $C .cache/gpu
  ;;
run)
  # Optional second argument: the sections to run, in that order, e.g. `run 4,5` (default:
  # 1,2,3,4,5,6). Section 6 needs 5 earlier in the same run.
  SECTIONS="${2:-1,2,3,4,5,6}"
  SITE=$(python3 -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  LINKS=$(mktemp -d)
  ln -s "$SITE/nvidia/nccl/lib/libnccl.so.2" "$LINKS/libnccl.so"   # cudarc loads `libnccl.so`
  export LD_LIBRARY_PATH="$LINKS:$SITE/torch/lib:$(echo "$SITE"/nvidia/*/lib "$SITE"/nvidia/cu13/lib 2>/dev/null | tr ' ' :)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export RUST_BACKTRACE=0 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  $W info
  $W random-model --tokenizer-from .cache/gpu/smol --config-from .cache/gpu/smol --out /tmp/smol-random
  section1() {
    $W nccl-check --values $((64 << 20))
  }
  section2() {
    echo "-- airlift (CUDA graphs)"
    $W bench --device cuda --model /tmp/smol-random --batches 1,16,64,256 --train-steps 0
    echo "-- airlift without CUDA graphs (AIRLIFT_CUDA_GRAPHS=0)"
    AIRLIFT_CUDA_GRAPHS=0 $W bench --device cuda --model /tmp/smol-random --batches 1,64 --train-steps 0
    echo "-- transformers"
    python3 scripts/bench_hf.py --device cuda --model /tmp/smol-random --batches 1,16,64,256 --train-steps 0
  }
  section3() {
    python3 scripts/profile_decode_hf.py --model /tmp/smol-random --batch 1 2>&1 | head -n 80
  }
  section4() {
    echo "-- SmolLM2 shape 8 x 256: airlift (fused LM head + fused AdamW), then transformers"
    $W bench --device cuda --model /tmp/smol-random --skip-generate --train-batch 8 --train-seq 256 --train-steps 5
    python3 scripts/bench_hf.py --device cuda --model /tmp/smol-random --batches "" --train-batch 8 --train-seq 256 --train-steps 5
    [ -d /tmp/qwen-random ] || $W random-model --tokenizer-from .cache/gpu/smol --config-from .cache/gpu/qwen --out /tmp/qwen-random
    echo "-- Qwen2.5-0.5B shape 16 x 1024, bf16 compute: airlift as built, each fusion off, both off; transformers"
    for v in "1 1" "0 1" "1 0" "0 0"; do
      set -- $v
      echo "AIRLIFT_FUSED_HEAD=$1 AIRLIFT_FUSED_ADAMW=$2"
      AIRLIFT_FUSED_HEAD=$1 AIRLIFT_FUSED_ADAMW=$2 $W bench --device cuda --model /tmp/qwen-random --skip-generate --dtypes bf16 --train-batch 16 --train-seq 1024 --train-steps 5
    done
    python3 scripts/bench_hf.py --device cuda --model /tmp/qwen-random --batches "" --dtypes bf16 --train-batch 16 --train-seq 1024 --train-steps 5
  }
  section7() {
    [ -d /tmp/qwen-random ] || $W random-model --tokenizer-from .cache/gpu/smol --config-from .cache/gpu/qwen --out /tmp/qwen-random
    for who in airlift transformers airlift; do
      if [ $who = airlift ]; then
        $W bench --device cuda --model /tmp/qwen-random --skip-generate --dtypes bf16 --train-batch 16 --train-seq 1024 --train-steps 5 | grep train
      else
        python3 scripts/bench_hf.py --device cuda --model /tmp/qwen-random --batches "" --dtypes bf16 --train-batch 16 --train-seq 1024 --train-steps 5 2>&1 | grep train
      fi
    done
  }
  section5() {
    RUN=$(mktemp -d)
    local start=$(date +%s)
    AIRLIFT__MODEL__POLICY=/tmp/smol-random AIRLIFT__WORKERS__DEVICE=cuda AIRLIFT__RUN__DIR="$RUN/run" AIRLIFT__RUN__ITERATIONS=2 \
      CUDA_VISIBLE_DEVICES=0 $C --config configs/default.toml --local 2>"$RUN/coordinator.log" || { tail -n 20 "$RUN/coordinator.log"; tail -n 20 "$RUN"/run/logs/*.log; return 1; }
    echo "default config on CUDA: $(( $(date +%s) - start )) s wall"
    grep -h "NCCL communicator" "$RUN"/run/logs/*.log | head -n 2 || true
    # Phase times from the run's metrics: warm starts, then per iteration.
    python3 - "$RUN/run/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    l = (d.get("learners") or [{}])[0]
    r = d.get("rollout") or {}
    t = {k: round(v, 2) for k, v in l.items() if k.startswith("time_") or k.startswith("learner_")}
    g = {k: round(r[k], 2) for k in ("generation_s", "tokens_per_s", "weight_sync_s", "tokens") if k in r}
    print(d.get("phase", f"iteration {d.get('iteration')}"), t, g)
PY
  }
  section6() {
    [ -n "${RUN:-}" ] && [ -d "$RUN/run/checkpoints" ] || { echo "(needs section 5 first)"; return 0; }
    local start=$(date +%s)
    CUDA_VISIBLE_DEVICES=0 $C eval --checkpoint "$(ls -d "$RUN"/run/checkpoints/step-* | tail -n 1)" --problems synthetic:32 --samples 4 --out "$RUN/eval" 2>"$RUN/eval.log" | tail -n 24 || { tail -n 20 "$RUN/eval.log"; return 1; }
    echo "evaluation on CUDA: $(( $(date +%s) - start )) s wall"
  }
  titles=("" "1. NCCL" "2. generation, SmolLM2 shape, random weights" "3. one transformers decode step profiled"
    "4. training steps" "5. configs/default.toml on CUDA (random weights, 2 iterations)"
    "6. evaluation job on CUDA: the last checkpoint of 5, 32 synthetic problems x 4 samples"
    "7. the Qwen2.5-0.5B-shaped training step only: airlift, transformers, airlift")
  status=0
  for n in ${SECTIONS//,/ }; do
    echo "== ${titles[$n]}  ($(date +%T))"
    section$n || { echo "section $n failed"; status=1; }
  done
  exit $status
  ;;
*)
  echo "usage: scripts/gpu_check.sh prepare|run" >&2
  exit 2
  ;;
esac
