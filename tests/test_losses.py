"""Each loss against a value computed by hand on a tiny tensor."""
import math

import torch

from tmkd_core.losses import batch_infonce, dkd_loss, feature_loss, kd_loss, text_nce


def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_loss_by_hand():
    zs, zt, tau = [1.0, 0.0, -1.0], [2.0, 0.0, 0.0], 2.0
    ps, pt = _softmax([x / tau for x in zs]), _softmax([x / tau for x in zt])
    expected = tau**2 * sum(t * math.log(t / s) for t, s in zip(pt, ps))
    got = kd_loss(torch.tensor([zs]), torch.tensor([zt]), tau)
    assert math.isclose(float(got), expected, rel_tol=1e-5)
    assert float(kd_loss(torch.tensor([zs]), torch.tensor([zs]), tau)) < 1e-7


def test_dkd_loss_by_hand():
    zs, zt, y, tau, a, b = [1.0, 0.5, -1.0], [3.0, 0.0, 1.0], 0, 1.0, 1.0, 8.0
    ps, pt = _softmax(zs), _softmax(zt)
    bs, bt = [ps[0], 1 - ps[0]], [pt[0], 1 - pt[0]]
    tckd = sum(t * math.log(t / s) for t, s in zip(bt, bs))
    qs, qt = _softmax(zs[1:]), _softmax(zt[1:])
    nckd = sum(t * math.log(t / s) for t, s in zip(qt, qs))
    got = dkd_loss(torch.tensor([zs]), torch.tensor([zt]), torch.tensor([y]), a, b, tau)
    assert math.isclose(float(got), a * tckd + b * nckd, rel_tol=1e-4)


def test_feature_loss_by_hand():
    got = feature_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]]))
    assert math.isclose(float(got), (1 + 4) / 2)


def test_text_nce_by_hand():
    q = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # cosines 1 and 0
    tau = 0.5
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0)))
    assert math.isclose(float(text_nce(q, t, torch.tensor([0]), tau)), expected, rel_tol=1e-6)


def test_batch_infonce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    c = 1 / math.sqrt(2)
    tau = 1.0
    row0 = -math.log(math.exp(c) / (math.exp(c) + math.exp(0)))
    row1 = -math.log(math.exp(1) / (math.exp(c) + math.exp(1)))
    assert math.isclose(float(batch_infonce(q, k, tau)), (row0 + row1) / 2, rel_tol=1e-6)
