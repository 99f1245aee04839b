#!/usr/bin/env bash
# The whole GPU check in one run (one lease of a GPU machine): the default GPU recipe against the original
# recipe, 10 epochs of the default for three seeds, and a GPU-trained checkpoint used on the CPU.
#
#   MNISTCTL_MIRROR=<dir with the four .gz files> bash bench/gpu.sh [OUT_DIR]
#
# Prints the tables for docs/benchmarks.md; writes the logs and checkpoints to OUT_DIR (default: ./gpu-out).
set -euo pipefail
out=${1:-gpu-out}
mkdir -p "$out"
export MNISTCTL_DATA_DIR=${MNISTCTL_DATA_DIR:-$out/data} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
export PYTHONPATH=${PYTHONPATH:-$PWD}  # this checkout, for the bench scripts and the commands they start
mnistctl() { "$py" -m mnistctl "$@"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
mnistctl download -q
# One epoch of each: the per-epoch speed ratio, in one run on one GPU.
"$py" bench/train.py --epochs 1 2>&1 | tee "$out/ratio.log"
# The default GPU recipe, 10 epochs, three seeds: accuracy, training seconds, whole command, time to 99 %.
"$py" bench/train.py --epochs 10 --seeds 0,1,2 --no-original 2>&1 | tee "$out/default.log"
# A GPU-trained checkpoint evaluated and used for prediction on the CPU.
mnistctl train --epochs 1 -o "$out/gpu.pt" -q --force
mnistctl eval -m "$out/gpu.pt" --device cpu --json | "$py" -c 'import json,sys; print("eval on cpu:", json.load(sys.stdin)["accuracy"])'
"$py" -c 'from PIL import Image; d = Image.new("L", (28, 28)); d.paste(255, (12, 4, 16, 24)); d.save("/tmp/one.png")'
mnistctl predict -m "$out/gpu.pt" --device cpu /tmp/one.png | tee "$out/predict-cpu.txt"
