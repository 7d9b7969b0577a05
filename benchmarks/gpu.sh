#!/usr/bin/env bash
# Run every benchmark on a CUDA machine and collect their tables in one file; the full output of
# each goes to a log next to it. Each of the 4 steps is capped at STEP_LIMIT_S=110 s (< 8 min).
#
#   benchmarks/gpu.sh [TABLES_FILE]              # default benchmarks/results/gpu-tables.txt
#   DEVICE=cpu QUICK=1 benchmarks/gpu.sh out.txt   # smoke test of this script without a GPU
#
# Exit status: non-zero as soon as a benchmark fails, times out, or misses its target.
set -euo pipefail

cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
TABLES=${1:-benchmarks/results/gpu-tables.txt}
LOGS=$(dirname "$TABLES")/logs
STEP_LIMIT_S=${STEP_LIMIT_S:-110}  # 4 steps x 110 s keeps the worst case under 8 min
QUICK_FLAG=()
[ -n "${QUICK:-}" ] && QUICK_FLAG=(--quick)

mkdir -p "$(dirname "$TABLES")" "$LOGS"
: >"$TABLES"
if [ "$DEVICE" = cuda ]; then
    "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
        echo "gpu.sh: torch sees no CUDA device (DEVICE=cpu runs the smoke test)" >&2
        exit 1
    }
fi
{
    echo "# upbench benchmarks - $(date -u +%FT%TZ) - device $DEVICE"
    "$PYTHON" -c 'import torch; print("# torch", torch.__version__,
        torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")'
} >>"$TABLES"

# run NAME TABLE_START_REGEX SCRIPT ARGS...: full output to $LOGS/NAME.log; the table (from the
# first line matching TABLE_START_REGEX to the end) appended to $TABLES.
run() {
    local name=$1 table_start=$2
    shift 2
    local log="$LOGS/$name.log" status=0
    echo "== $name: $*" >&2
    timeout "$STEP_LIMIT_S" "$PYTHON" "$@" >"$log" 2>&1 || status=$?
    { echo; echo "## $name"; sed -n "/$table_start/,\$p" "$log"; } >>"$TABLES"
    if [ "$status" -ne 0 ]; then
        echo "gpu.sh: $name failed with exit status $status (124 = over ${STEP_LIMIT_S} s);" \
            "last lines of $log:" >&2
        tail -20 "$log" >&2
        exit "$status"
    fi
}

run harness_overhead '^Harness overhead' benchmarks/harness_overhead.py \
    --device "$DEVICE" "${QUICK_FLAG[@]}"
# The synthetic data is generated and loaded on the CPU, so this one has no device.
run data_throughput '^synthetic data' benchmarks/data_throughput.py "${QUICK_FLAG[@]}"
run upsamplers '^Upsamplers' benchmarks/upsamplers.py --device "$DEVICE" "${QUICK_FLAG[@]}"
run carafe_op '.' benchmarks/carafe_op.py --device "$DEVICE" "${QUICK_FLAG[@]}"
echo "gpu.sh: tables in $TABLES, logs in $LOGS" >&2
