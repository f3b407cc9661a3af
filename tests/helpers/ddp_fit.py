"""`fit` on a small BatchNorm-free network, in one process or under torchrun; writes the
final parameters and history (rank 0) to the path given. Used by tests/test_distributed.py."""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from tmkd_core import distributed
from tmkd_core.config import OptimConfig
from tmkd_core.data import ImageSet
from tmkd_core.train import fit


class Net(nn.Module):  # no BatchNorm: under data parallelism every number equals one process's
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1))


def run(out: str) -> None:
    distributed.init()
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8, generator=g),
                    torch.randint(0, 4, (96,), generator=g), ["a", "b", "c", "d"])
    torch.manual_seed(1)
    net = Net()

    def loss_fn(batch):
        logits = net(batch.x)
        return logits, {"ce": F.cross_entropy(logits, batch.labels)}

    history = fit(net, loss_fn, data, OptimConfig(epochs=2, lr=0.1, batch_size=16), seed=3, augment_seed=4,
                  progress=False)
    if distributed.is_main():
        torch.save({"params": {k: v.detach().clone() for k, v in net.state_dict().items()}, "history": history}, out)


if __name__ == "__main__":
    run(sys.argv[1])
