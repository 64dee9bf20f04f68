#!/usr/bin/env bash
# The CUDA half of the performance measurements in one short run, for a session that is lent a GPU.
# Writes one JSON file per measurement under ${OUT:-bench-out}/ and prints a one-line summary each.
#
#   bash benchmarks/cuda_suite.sh                    # birds preset, batch 24, on cuda
#   DEVICE=cpu PRESET=tiny ITERS=2 bash benchmarks/cuda_suite.sh   # dry run of the script on a CPU
#
# Order: the default path against --plain first (the number the issue asks for), then one change at
# a time: bf16 autocast, stacked D passes, torch.compile; then sampling latency.
set -euo pipefail
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-birds}
BATCH=${BATCH:-24}
ITERS=${ITERS:-20}
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

run() {  # name, extra train_step.py flags
  local name=$1
  shift
  python benchmarks/train_step.py --preset "$PRESET" --batch "$BATCH" --iters "$ITERS" --device "$DEVICE" "$@" >"$OUT/$name.json"
  python - "$OUT/$name.json" "$name" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
line = f"{sys.argv[2]}: {r['median_s']:.4f} s/iter, {r['fraction_of_peak']:.0%} of peak, rss {r['peak_rss_mb']:.0f} MB"
if "speedup_vs_plain" in r:
    line += f", {r['speedup_vs_plain']:.2f}x vs plain ({r['plain']['median_s']:.4f} s)"
if "peak_gpu_memory_mb" in r:
    line += f", gpu mem {r['peak_gpu_memory_mb']:.0f} MB"
print(line)
EOF
}

run default
run bf16 --amp bf16 --no-reference
run stacked-d --stacked-d --no-reference
run bf16-stacked-d --amp bf16 --stacked-d --no-reference
run compile --compile --no-reference
python benchmarks/sample_latency.py --device "$DEVICE" --repeats 3 >"$OUT/sample_latency.json"
echo "sample latency: $(tr -d '\n' <"$OUT/sample_latency.json" | cut -c1-300)"
