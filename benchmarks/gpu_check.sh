#!/usr/bin/env bash
# The GPU check: on one H100/H200, in under 8 minutes, one Markdown table (+ JSON) of
#   1. MFU of task training (VGG-16) and scoring training (ResNet-18), 32x32, bf16;
#   2. scoring (S_S + S_C) against its bare forward passes at GPU batch sizes;
#   3. one round of the paper's CIFAR-10 protocol at its pool size, extrapolated to all rounds;
#   4. test accuracy of a short run in bf16 against fp32, same seed;
#   5. 4 Ray Tune trials sharing the GPU (gpus_per_trial=0.25) against one at a time.
#
#   benchmarks/gpu_check.sh [--tiny] [--out DIR] [--dataset PATH] [--device auto|cpu|cuda]
#   GPU_CHECK_TINY=1 benchmarks/gpu_check.sh    # the same steps at a tiny size, on a CPU
#
# Needs the checkout with `pip install -e .` done, and CIFAR-10 as JPEGs: --dataset, else
# $GPU_CHECK_DATA, else data/cifar10-jpeg.tar.gz in the checkout (data/ is ignored by git),
# else ../shared/data/cifar10-jpeg.tar.gz. It is decoded once into data/.pal-cache/.
# Writes DIR/gpu_check.md and gpu_check.json (default benchmarks/results/gpu-check-<time>),
# with each step's JSON and log beside them.
#
# Each step is its own process under `timeout`, capped by CAP_<STEP> seconds (below) and by
# what is left of GPU_CHECK_TOTAL_CAP for the whole; a step that fails or runs out of time
# gets a row saying so. Sizes: benchmarks/gpu_check.py's SIZES, each overridden by
# GPU_CHECK_<NAME> (`python -m benchmarks.gpu_check sizes --out /tmp [--tiny]` lists them).
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2

TINY=${GPU_CHECK_TINY:-0}
OUT=${GPU_CHECK_OUT:-}
DATASET=${GPU_CHECK_DATA:-}
DEVICE=${GPU_CHECK_DEVICE:-auto}
PYTHON=${PYTHON:-python}
while [ $# -gt 0 ]; do
  case $1 in
    --tiny) TINY=1 ;;
    --out) OUT=$2; shift ;;
    --dataset) DATASET=$2; shift ;;
    --device) DEVICE=$2; shift ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -z "$DATASET" ]; then
  for candidate in data/cifar10-jpeg.tar.gz ../shared/data/cifar10-jpeg.tar.gz; do
    if [ -e "$candidate" ]; then DATASET=$candidate; break; fi
  done
fi
if [ -z "$DATASET" ] || [ ! -e "$DATASET" ]; then
  echo "gpu_check: no CIFAR-10: copy cifar10-jpeg.tar.gz to data/ or pass --dataset PATH" >&2
  exit 2
fi

# caps in seconds: every step, and the whole (the GPU check's 8 minutes less a margin)
if [ "$TINY" = 1 ]; then
  MODE=(--tiny)
  : "${CAP_PREPARE:=240}" "${CAP_MFU:=120}" "${CAP_SCORING_RATIO:=90}"
  : "${CAP_PROTOCOL_ROUND:=120}" "${CAP_BF16_ACCURACY:=120}" "${CAP_GPU_PACKING:=120}"
  : "${GPU_CHECK_TOTAL_CAP:=900}"
else
  MODE=()
  : "${CAP_PREPARE:=60}" "${CAP_MFU:=55}" "${CAP_SCORING_RATIO:=40}"
  : "${CAP_PROTOCOL_ROUND:=100}" "${CAP_BF16_ACCURACY:=70}" "${CAP_GPU_PACKING:=115}"
  : "${GPU_CHECK_TOTAL_CAP:=465}"
fi
OUT=${OUT:-benchmarks/results/gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}  # a local Ray cluster, for the packing step

START=$(date +%s)
echo "gpu_check: $DATASET -> $OUT${MODE[*]:+ (tiny)}"
for step in prepare mfu scoring_ratio protocol_round bf16_accuracy gpu_packing; do
  var="CAP_$(echo "$step" | tr '[:lower:]' '[:upper:]')"
  cap=${!var}
  left=$((GPU_CHECK_TOTAL_CAP - ($(date +%s) - START) - 5))
  if [ "$left" -lt "$cap" ]; then cap=$left; fi
  if [ "$cap" -lt 10 ]; then
    echo "  $step: not run, no time left"
    echo '{"rc": null, "skipped": "no time left"}' > "$OUT/$step.status"
    continue
  fi
  t0=$(date +%s.%N)
  timeout --kill-after=5 "$cap" "$PYTHON" -m benchmarks.gpu_check "$step" --out "$OUT" \
    --dataset "$DATASET" --device "$DEVICE" "${MODE[@]}" > "$OUT/$step.log" 2>&1
  rc=$?
  seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  echo "{\"rc\": $rc, \"seconds\": $seconds, \"cap\": $cap}" > "$OUT/$step.status"
  if [ "$rc" = 0 ]; then
    echo "  $step: ${seconds} s"
  else
    echo "  $step: FAILED (exit $rc after ${seconds} s, cap ${cap} s); the end of $OUT/$step.log:"
    tail -n 5 "$OUT/$step.log" | sed 's/^/    /'
    if [ "$step" = gpu_packing ] && [ "$rc" -ge 124 ]; then
      echo "    (a stopped sweep can leave Ray's processes behind: 'ray stop' ends them)"
    fi
  fi
done
"$PYTHON" -m benchmarks.gpu_check report --out "$OUT" "${MODE[@]}"
