#!/usr/bin/env bash
# The GPU figures, in one go, where a GPU machine is lent (the tests never need one):
#   bash benchmarks/gpu_figures.sh OUTDIR      (ONLY="tracing_speed pruning" for some steps)
# Runs device_check (every path on cuda against the CPU) and the benchmarks that take --device,
# each under its own time limit, into OUTDIR/all.log (sections) and OUTDIR/device_check.json.
# Extra pure-Python packages the machine lacks (captum, pytorch-grad-cam) may sit in .devpkgs/.
set -u
OUT=${1:-gpu_figures}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 MPLCONFIGDIR=/tmp/mpl PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/.devpkgs:${PYTHONPATH:-}"
PY=${PY:-python3}
LOG="$OUT/all.log"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
} > "$LOG" 2>&1

run() {  # run NAME SECONDS CMD... (skipped unless NAME is in $ONLY, when ONLY is set)
  local name=$1 limit=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  echo "=== $name ($*)" >> "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v "Loading weights\|it/s\]$" >> "$LOG"
  echo "=== $name rc=${PIPESTATUS[0]} ${SECONDS}s total, $((SECONDS - t0))s this step" >> "$LOG"
}

run device_check 120 $PY benchmarks/device_check.py --device cuda --json "$OUT/device_check.json"
run tracing_speed 75 $PY benchmarks/tracing_speed.py --device cuda --repeats 3
run steering_overhead 130 $PY benchmarks/steering_overhead.py --device cuda --methods iri,meandiff,probe,vcd --repeats 15
run capture_overhead 45 $PY benchmarks/capture_overhead.py --device cuda --repeats 20 --models tiny:llava,tiny:vit,shapes-llava,shapes-vit
run offload 40 $PY benchmarks/offload.py --gpu-budget 3 --repeats 10
run pruning 90 $PY benchmarks/pruning.py --device cuda --n 128 --repeats 7
