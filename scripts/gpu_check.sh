#!/usr/bin/env bash
# First thing to run on a machine with a GPU: CUDA, bf16 autocast, channels-last, the paper
# profile for one epoch on a CIFAR-100 subset, and torchrun with 2 processes if 2 GPUs exist.
# Prints step times; the output belongs in docs/gpu_check.md with the machine's name.
#
#   bash scripts/gpu_check.sh [N_TRAIN]          # N_TRAIN: training images of the subset (5000)
#
# The text teacher is MiniLM (offline) unless TEXT="--set text.backend=open_clip ..." is given.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N_TRAIN=${1:-5000}
TEXT=${TEXT:-"--set text.backend=sentence_transformers --set text.model=null --set text.pretrained=null"}
export PYTHONUNBUFFERED=1

echo "== CUDA, bf16, channels-last"
$PY - <<'PY'
import time, torch
import torch.nn.functional as F
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "|", torch.cuda.device_count(), "x",
      torch.cuda.get_device_name(0), "| bf16 supported:", torch.cuda.is_bf16_supported())
from tmkd_core.models import build_model
for fmt in (torch.contiguous_format, torch.channels_last):
    for dtype in (None, torch.bfloat16):
        model = build_model("resnet8x4", 100).cuda().to(memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=True)
        x = torch.rand(64, 3, 32, 32, device="cuda").contiguous(memory_format=fmt)
        y = torch.randint(0, 100, (64,), device="cuda")
        times = []
        for i in range(30):
            torch.cuda.synchronize(); t = time.perf_counter()
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(model(x)[0], y)
            opt.zero_grad(); loss.backward(); opt.step()
            torch.cuda.synchronize()
            if i >= 10: times.append(time.perf_counter() - t)
        name = "channels_last" if fmt is torch.channels_last else "contiguous"
        print(f"resnet8x4 step, batch 64, {name:13s} {str(dtype or 'float32'):15s} "
              f"{1000 * sorted(times)[len(times) // 2]:6.2f} ms")
PY

SUBSET="--set data.train_size=$N_TRAIN --set data.val_size=1000 --set data.test_size=2000
        --set teacher.optim.epochs=1 --set teacher.multiview_optim.epochs=1 --set student.optim.epochs=1"
echo "== paper profile, 1 epoch on $N_TRAIN CIFAR-100 images (teachers, then KD and TMKD students)"
time $PY -m tmkd_core teachers --profile paper --dataset cifar100 $SUBSET $TEXT
for method in KD TMKD; do
  time $PY -m tmkd_core student --profile paper --dataset cifar100 --method $method $SUBSET $TEXT
done

if [ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  echo "== torchrun, 2 processes (nccl), the TMKD student again from scratch"
  time $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m tmkd_core student --profile paper \
    --dataset cifar100 --method TMKD $SUBSET $TEXT --force
else
  echo "== torchrun skipped: one GPU"
fi
