"""Exploration: three-view resnet14 teacher forward (128 images), float32 vs bf16 autocast, with and without channels-last."""
import time, torch, statistics
from tmkd_core.models import build_model, MultiViewTeacher
torch.manual_seed(0)
def bench(fn, n=15):
    for _ in range(3): fn()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    return 1000*statistics.median(ts)
b = build_model("resnet14", 10)
mv = MultiViewTeacher(b, ("rgb","edge","hf"), 384).eval()
x = torch.rand(3,128,3,32,32)
for cl in (False, True):
    m = mv.to(memory_format=torch.channels_last) if cl else mv
    xx = x.flatten(0,1).contiguous(memory_format=torch.channels_last).view(3,128,3,32,32) if cl else x
    with torch.inference_mode():
        f32 = bench(lambda: m.pooled(xx))
        def bf():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return m.pooled(xx)
        b16 = bench(bf)
    print(f"channels_last={cl}: fp32 {f32:.1f} ms, bf16 autocast {b16:.1f} ms")
with torch.inference_mode():
    a = mv.pooled(x); 
    with torch.autocast("cpu", dtype=torch.bfloat16): c = mv.pooled(x).float()
print("bf16 rel err", ((a-c).norm()/a.norm()).item())
