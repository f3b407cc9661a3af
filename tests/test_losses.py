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


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_kd_loss_on_a_batch_is_the_mean_over_samples():
    # two samples with different KLs: `sum` would give twice the mean, `mean` a 1/K of it
    zs, zt, tau = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.5]], [[2.0, 0.0, 0.0], [1.0, -1.0, 3.0]], 3.0
    per_sample = [tau**2 * _kl(_softmax([x / tau for x in t]), _softmax([x / tau for x in s])) for s, t in zip(zs, zt)]
    assert abs(per_sample[0] - per_sample[1]) > 0.1
    got = kd_loss(torch.tensor(zs), torch.tensor(zt), tau)
    assert math.isclose(float(got), sum(per_sample) / 2, rel_tol=1e-5)


def test_dkd_loss_on_a_batch_at_tau_2_by_hand():
    # tau != 1 checks the tau^2 factor of both parts; two samples of other labels check the
    # mean over the batch and the masking of each sample's own target
    zs, zt, y = [[1.0, 0.5, -1.0], [0.2, -0.3, 1.5]], [[3.0, 0.0, 1.0], [-1.0, 2.0, 0.5]], [0, 2]
    tau, a, b = 2.0, 1.0, 8.0
    expected = 0.0
    for s, t, c in zip(zs, zt, y):
        ps, pt = _softmax([x / tau for x in s]), _softmax([x / tau for x in t])
        tckd = _kl([pt[c], 1 - pt[c]], [ps[c], 1 - ps[c]])
        rest = [k for k in range(3) if k != c]
        nckd = _kl(_softmax([t[k] / tau for k in rest]), _softmax([s[k] / tau for k in rest]))
        expected += tau**2 * (a * tckd + b * nckd) / len(zs)
    got = dkd_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), a, b, tau)
    assert math.isclose(float(got), expected, rel_tol=1e-4)


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
