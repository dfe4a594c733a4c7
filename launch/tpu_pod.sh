#!/usr/bin/env bash
# TPU pod: copy this repository to every worker, install it, and run the same trainer command on all workers.
# jax.distributed.initialize() needs no arguments on TPU pods: every worker discovers the others itself.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a launch/tpu_pod.sh configs/grpo_qwen25math.py [--config.x.y=v ...]
#
# Environment knobs:
#   TPU_NAME, ZONE (required), PROJECT (optional gcloud project)
#   REMOTE_DIR   where the code lives on the workers (default: ~/rlvr_jax)
#   SKIP_INSTALL set to 1 to reuse an existing install
#   LOG_DIR      per-worker log directory on the workers (default: ~/rlvr_logs)
set -euo pipefail

CONFIG=${1:?usage: TPU_NAME=.. ZONE=.. launch/tpu_pod.sh CONFIG [--config.overrides ...]}
shift
TPU_NAME=${TPU_NAME:?set TPU_NAME}
ZONE=${ZONE:?set ZONE}
REMOTE_DIR=${REMOTE_DIR:-rlvr_jax}
LOG_DIR=${LOG_DIR:-rlvr_logs}
PROJECT_ARGS=()
[[ -n "${PROJECT:-}" ]] && PROJECT_ARGS=(--project "$PROJECT")
GCLOUD=(gcloud compute tpus tpu-vm)
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)

# 1. Copy the code (without virtual environments, runs and caches) to all workers.
TARBALL=$(mktemp -d)/rlvr_jax.tar.gz
tar -C "$REPO_ROOT" --exclude=.venv --exclude=runs --exclude=.git --exclude='__pycache__' -czf "$TARBALL" .
"${GCLOUD[@]}" scp "$TARBALL" "$TPU_NAME:/tmp/rlvr_jax.tar.gz" --worker=all --zone "$ZONE" "${PROJECT_ARGS[@]}"
"${GCLOUD[@]}" ssh "$TPU_NAME" --worker=all --zone "$ZONE" "${PROJECT_ARGS[@]}" --command \
  "mkdir -p ~/$REMOTE_DIR && tar -C ~/$REMOTE_DIR -xzf /tmp/rlvr_jax.tar.gz"

# 2. Install (JAX for TPU + the package) in a venv on every worker.
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  "${GCLOUD[@]}" ssh "$TPU_NAME" --worker=all --zone "$ZONE" "${PROJECT_ARGS[@]}" --command \
    "cd ~/$REMOTE_DIR && (test -x .venv/bin/python || python3 -m venv .venv) && \
     .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[tpu]'"
fi

# 3. Run the same command on all workers; each writes its own log, process 0 writes metrics/checkpoints.
QUOTED_ARGS=$(printf ' %q' "$@")
"${GCLOUD[@]}" ssh "$TPU_NAME" --worker=all --zone "$ZONE" "${PROJECT_ARGS[@]}" --command \
  "cd ~/$REMOTE_DIR && mkdir -p ~/$LOG_DIR && \
   .venv/bin/python -m rlvr_jax.train --config=$CONFIG$QUOTED_ARGS 2>&1 | tee ~/$LOG_DIR/worker_\$(hostname).log"
