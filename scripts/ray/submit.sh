#!/usr/bin/env bash
# Submit a vortex-rl training run to an existing Ray cluster as a Ray job.
#
#   RAY_ADDRESS=http://head-node:8265 scripts/ray/submit.sh recipe=qwen3_4b_polaris trainer.total_steps=100
#
# The repository is uploaded as the job's working directory and put on PYTHONPATH on every node; the
# cluster's image must already hold the dependencies (torch, transformers, ray and the `train` extra),
# since installing them per job would pull a multi-GB torch build. A cluster with token authentication
# also needs RAY_AUTH_MODE=token and its token in ~/.ray/auth_token here.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -z "${RAY_ADDRESS:-}" ]]; then
    echo "set RAY_ADDRESS to the Ray dashboard address of the cluster (e.g. http://head:8265)" >&2
    exit 2
fi
exec ray job submit \
    --working-dir . \
    --runtime-env-json '{"excludes": [".venv", "runs", "outputs", "wandb", ".git"], "env_vars": {"PYTHONPATH": "."}}' \
    -- python -m vortex_rl.train trainer.orchestrator=ray "$@"
