#!/usr/bin/env bash
# Training-step rows of the RepViT ImageNet recipe on a GPU, in one command (meant to take under 8
# minutes on one H100; not yet timed on one): the distillation and the non-distillation config of one
# arch (default M0.9), at batch 256 and 64, 224x224, rows timm_bare, bare, authors_loop (the RepViT
# authors' own step) and runner (what tools/train.py runs; mixed precision on CUDA), with the card, driver
# and library versions first.
#
#   tools/gpu_train_benchmark.sh                          # CUDA, the defaults above
#   tools/gpu_train_benchmark.sh --json-dir out/          # also one JSON file per config and batch size
#   tools/gpu_train_benchmark.sh --device cpu --batch-sizes 2 --shape 32 --iters 1 --warmup 0  # its test
#
# Options: --device cuda|cpu, --arch ARCH (config name part: m0.9, m1.1, ...), --batch-sizes "256 64",
# --shape 224, --iters 10, --warmup 3, --threads N, --json-dir DIR. PYTHON selects the interpreter.
set -euo pipefail

device=cuda arch=m0.9 batch_sizes="256 64" shape=224 iters=10 warmup=3 threads="" json_dir=""
die() { echo "error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value"
  case "$1" in
    --device) device=$2 ;;
    --arch) arch=$2 ;;
    --batch-sizes) batch_sizes=$2 ;;
    --shape) shape=$2 ;;
    --iters) iters=$2 ;;
    --warmup) warmup=$2 ;;
    --threads) threads=$2 ;;
    --json-dir) json_dir=$2 ;;
    *) die "unknown option $1 (see the top of $0)" ;;
  esac
  shift 2
done

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
configs=(
  "$root/configs/classification/repvit-${arch}_8xb256-distill-300e_in1k.py"
  "$root/configs/classification/repvit-${arch}_8xb256-300e_in1k.py"
)
for cfg in "${configs[@]}"; do [ -f "$cfg" ] || die "no config $cfg (--arch $arch)"; done

echo "# RepViT training-step benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), device $device"
echo "# repvit-mm commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ $device == cuda* ]] && command -v nvidia-smi >/dev/null; then
  echo "# card: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
fi
"$python" - "$device" <<'EOF'
import sys

import mmengine
import mmpretrain
import timm
import torch

print(f'# python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN '
      f'{torch.backends.cudnn.version()}), timm {timm.__version__}, mmengine {mmengine.__version__}, '
      f'mmpretrain {mmpretrain.__version__}')
if sys.argv[1].startswith('cuda'):
    if not torch.cuda.is_available():
        sys.exit('error: --device cuda: torch sees no CUDA device')
    print(f'# torch device: {torch.cuda.get_device_name(torch.device(sys.argv[1]))}')
EOF
[ -z "$json_dir" ] || mkdir -p "$json_dir"

for cfg in "${configs[@]}"; do
  for bs in $batch_sizes; do
    args=("$cfg" --train --device "$device" --batch-size "$bs" --shape "$shape" --iters "$iters"
          --warmup "$warmup" --paths timm_bare bare authors_loop runner)
    [ -z "$threads" ] || args+=(--threads "$threads")
    [ -z "$json_dir" ] || args+=(--json "$json_dir/$(basename "$cfg" .py)_b$bs.json" --force)
    echo
    "$python" "$root/tools/benchmark.py" "${args[@]}"
  done
done
