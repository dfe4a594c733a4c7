#!/usr/bin/env bash
# Single GPU node: start a vLLM server for rollouts, wait until it is healthy, then run the trainer against it.
#
#   launch/gpu_node.sh configs/nsr_qwen25math.py [--config.x.y=v ...]
#
# Environment knobs:
#   VLLM_GPUS      CUDA devices for the vLLM server   (default: 0)
#   TRAIN_GPUS     CUDA devices for the JAX learner   (default: 1,2,3,4,5,6,7)
#   VLLM_PORT      server port on 127.0.0.1           (default: 8000)
#   VLLM_PYTHON    interpreter with vllm installed    (default: python)
#   PYTHON         interpreter with rlvr_jax installed (default: python)
#   VLLM_ARGS      extra server arguments
set -euo pipefail

CONFIG=${1:?usage: launch/gpu_node.sh CONFIG [--config.overrides ...]}
shift
PYTHON=${PYTHON:-python}
VLLM_PYTHON=${VLLM_PYTHON:-$PYTHON}
VLLM_GPUS=${VLLM_GPUS:-0}
TRAIN_GPUS=${TRAIN_GPUS:-1,2,3,4,5,6,7}
VLLM_PORT=${VLLM_PORT:-8000}
VLLM_ARGS=${VLLM_ARGS:-}

# One field of the config (with the command line's overrides), e.g. `config_field model.hf_path "$@"`.
config_field() {
  local field=$1; shift
  "$PYTHON" - "$field" "$CONFIG" "$@" <<'PY'
import sys
from absl import flags
from ml_collections import config_flags
fv = flags.FlagValues()
argv = ["x", f"--config={sys.argv[2]}", *sys.argv[3:]]
config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
fv(argv)
value = fv.config
for part in sys.argv[1].split("."):
    value = value[part]
print(value)
PY
}
# The model the server starts from: the config's model.hf_path (the trainer syncs its weights every step).
MODEL=$(config_field model.hf_path "$@")
OUT=$(config_field logging.out_dir "$@")
mkdir -p "$OUT"
LOG="$OUT/vllm_server.log"

echo "[launch] vLLM server: model=$MODEL gpus=$VLLM_GPUS port=$VLLM_PORT log=$LOG"
# Dev mode enables /collective_rpc (reload_weights) and /reset_prefix_cache used by the weight sync.
CUDA_VISIBLE_DEVICES=$VLLM_GPUS VLLM_SERVER_DEV_MODE=1 \
  "$VLLM_PYTHON" -m vllm.entrypoints.openai.api_server --model "$MODEL" --host 127.0.0.1 --port "$VLLM_PORT" \
  --gpu-memory-utilization 0.85 --enable-prefix-caching $VLLM_ARGS >"$LOG" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true' EXIT

for _ in $(seq 1 600); do
  if curl -sf "http://127.0.0.1:$VLLM_PORT/health" >/dev/null; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "[launch] vLLM server died; see $LOG" >&2; exit 1; fi
  sleep 1
done
curl -sf "http://127.0.0.1:$VLLM_PORT/health" >/dev/null || { echo "[launch] vLLM not healthy after 600 s" >&2; exit 1; }
echo "[launch] vLLM healthy; starting the trainer on GPUs $TRAIN_GPUS"

CUDA_VISIBLE_DEVICES=$TRAIN_GPUS "$PYTHON" -m rlvr_jax.train --config="$CONFIG" \
  --config.rollout.engine=vllm --config.rollout.vllm.url="http://127.0.0.1:$VLLM_PORT" "$@"
