#!/usr/bin/env bash
# One-GPU benchmark session: the three variants vs. the bare compiled stack at LLaMA-2-7B
# dimensions, then the QLoRA memory run. Usage: bash benchmarks/gpu_run.sh OUT_DIR
# (random weights; builds the bases on the GPU; ~8 minutes on one H200). With DATA_SPEED=1 it
# then measures the input pipeline on the machine's CPUs (about 4 more minutes).
set -uo pipefail
out=${1:-bench-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
python3 -c "import torch, transformers, peft, lightning; print(torch.__version__, \
transformers.__version__, peft.__version__, lightning.__version__)" >> "$out/gpu.txt"
cat "$out/gpu.txt"
timeout "${SPEED_TIMEOUT:-330}" python3 benchmarks/train_speed.py --size 7b --compile \
  --backbone-layers 12 --init-device cuda --warmup 4 --steps 10 \
  --json "$out/speed.json" 2>&1 | grep -v "^trainable parameters" | tee "$out/speed.log"
timeout "${QLORA_TIMEOUT:-150}" python3 benchmarks/train_speed.py --size 7b --qlora-only \
  --backbone-layers 32 --init-device cuda --warmup 2 --steps 5 \
  --json "$out/qlora.json" 2>&1 | grep -v "^trainable parameters" | tee "$out/qlora.log"
# The input pipeline on the GPU machine's CPUs (loader vs bare decode limit, cache, streaming);
# needs the library's data dependencies (torchdata, pydicom) on that machine.
if [ "${DATA_SPEED:-0}" = 1 ] && python3 -c "import torchdata, pydicom" 2>/dev/null; then
  timeout "${DATA_TIMEOUT:-240}" python3 benchmarks/data_speed.py \
    --sizes 2500x2048:400 512x512:2000 --workers 0 8 16 --repeats 1 \
    --json "$out/data_speed.json" 2>&1 | grep "^{" | tee "$out/data_speed.log"
fi
