#!/usr/bin/env bash
# The lent GPU's software, as near as this CPU machine gets, before spending device time on it.
#
# The H200 image has torch 2.11 + CUDA 13, triton 3.6, transformers 5.17 and numpy 2.5, and no ray,
# datasets, wandb, hydra or math-verify (/work/.library/device/KINDS.md). This builds a venv with
# triton 3.6 and transformers 5.17 and none of the others (torch stays 2.13 CPU: a 2.11 CPU build is not
# on this disk), then, against the working tree:
#   1. compiles every kernel specialisation gpu_check.py needs, and every decode variant sweep_kernels.py
#      times, for sm_90 with triton 3.6
#      (inspect_kernels.py --sweep --tiles; non-zero exit if a sweep specialisation fails);
#   2. runs the kernel tests in triton 3.6's interpreter;
#   3. runs gpu_check.py --cpu-smoke (every phase, with transformers 5.17 and without the missing packages).
# numpy is held below 2.3 here: triton 3.6's interpreter turns its 1-element scalars into Python ints
# with int(array), which newer numpy refuses ("only 0-dimensional arrays can be converted"); compiled
# kernels on the GPU do not go through it.
#
#   bash scripts/device_replica.sh [VENV_DIR]    (default /tmp/vortex-device-replica; ~3 min, 0.5 GB)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-/tmp/vortex-device-replica}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q triton==3.6.0 "transformers==5.17.0" "numpy<2.3" pyyaml tqdm rich matplotlib \
    pytest psutil safetensors
fi
"$VENV/bin/python" -c "import torch, triton, transformers, numpy; print('replica: torch', torch.__version__, \
'triton', triton.__version__, 'transformers', transformers.__version__, 'numpy', numpy.__version__)"
cd "$ROOT"
export PYTHONPATH="$ROOT"
"$VENV/bin/python" scripts/inspect_kernels.py --sweep --tiles --out /tmp/device_replica_inspect.json | grep -E "^sweep:|FAILED"
TRITON_INTERPRET=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/kernels
"$VENV/bin/python" scripts/gpu_check.py --cpu-smoke --out /tmp/device_replica_gpu_check.json | grep -E '^\[|^device'
