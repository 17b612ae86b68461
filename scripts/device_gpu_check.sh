#!/usr/bin/env bash
# The one command to give a lent GPU (the device tool's `run`, timeout_s 600):
#
#   bash scripts/device_gpu_check.sh [gpu_check.py args...]
#
# It records the card (nvidia-smi) and the software, then runs scripts/gpu_check.py with every output under
# $OUT, the only folder whose files come back (at most 8 files): gpu_check.json (the report, rewritten
# after every phase), gpu_check.log (the whole output), gpu_check_rollout.json, sweep_kernels.json and
# nvidia-smi.txt. --total-limit-s (TOTAL_LIMIT_S, default 540, counted from this script's start) keeps the
# check inside the call's 600 s (pass a smaller TOTAL_LIMIT_S when the call's limit_s is less), so
# the table is printed last (the reply carries the last 12,000 characters) and the JSON is complete.
# Extra arguments go to gpu_check.py, e.g. `--phases kernel_sweep` to rerun one phase on a warm machine.
# Off the device, $OUT defaults to bench_results/device.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench_results/device}"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/nvidia-smi.txt"
# Triton builds its launcher with the C compiler and caches kernels under $HOME: without either, every
# Triton phase fails, and these lines say why in the first seconds.
echo "cc: $(command -v cc || command -v gcc || echo none)  HOME=${HOME:-unset}  triton cache: ${TRITON_CACHE_DIR:-$HOME/.triton/cache}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
TOTAL_LIMIT_S="${TOTAL_LIMIT_S:-540}"  # whole seconds below: bash arithmetic has no fractions
"$PY" -c "import torch, triton, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'transformers', transformers.__version__, 'gpu', torch.cuda.is_available() \
and torch.cuda.get_device_name())"
# The seconds spent above (nvidia-smi, the first imports on a cold disk) come off the total.
"$PY" scripts/gpu_check.py --out "$OUT/gpu_check.json" --total-limit-s "$(( ${TOTAL_LIMIT_S%%.*} - SECONDS ))" "$@" \
  2>&1 | tee "$OUT/gpu_check.log"
