"""Semantic weights and fusion (method.md §4)."""
import pytest
import torch
import torch.nn.functional as F

from tmkd_core.config import FusionConfig
from tmkd_core.fusion import ViewFusion, average_per_class, semantic_scores, semantic_weights


def test_weights_are_a_distribution_that_follows_the_scores():
    scores = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]])  # (V=3, B=2)
    w = semantic_weights(scores, tau_w=0.2)
    torch.testing.assert_close(w.sum(0), torch.ones(2))
    assert (w >= 0).all()
    assert w[:, 0].argmax() == 0 and w[:, 1].argmax() == 2
    assert w[0, 0] > w[1, 0] > w[2, 0]


def test_tied_scores_give_uniform_weights():
    w = semantic_weights(torch.full((3, 4), 0.37), tau_w=0.05)
    torch.testing.assert_close(w, torch.full((3, 4), 1 / 3))


def test_small_temperature_gives_one_hot_weights():
    scores = torch.tensor([[0.30], [0.31], [0.29]])
    w = semantic_weights(scores, tau_w=1e-4)
    torch.testing.assert_close(w[:, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    # and a large one tends to uniform
    torch.testing.assert_close(semantic_weights(scores, 1e4)[:, 0], torch.full((3,), 1 / 3), atol=1e-5, rtol=0)


def test_scores_are_cosines_to_the_class_text():
    t = F.normalize(torch.randn(2, 5, 8), dim=-1)
    q = torch.randn(2, 3, 8)
    c = torch.tensor([4, 0, 2])
    s = semantic_scores(q, t, c)
    for v in range(2):
        for b in range(3):
            expected = F.cosine_similarity(q[v, b], t[v, c[b]], dim=0)
            torch.testing.assert_close(s[v, b], expected)


def _outputs(v=3, b=6, k=4, d=5, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(v, b, k, generator=g), "pooled": torch.randn(v, b, d, generator=g),
            "text": torch.randn(v, b, dim, generator=g)}


def test_fusion_is_the_weighted_sum_of_views():
    out = _outputs()
    class_text = F.normalize(torch.randn(3, 4, 8), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    fusion = ViewFusion(FusionConfig(weights="text", tau_w=0.1), class_text)
    fused = fusion(out, labels)
    w = fused["weights"]
    torch.testing.assert_close(fused["logits"], (w[..., None] * out["logits"]).sum(0))
    torch.testing.assert_close(fused["pooled"], (w[..., None] * out["pooled"]).sum(0))
    expected_w = semantic_weights(semantic_scores(out["text"], class_text, labels), 0.1)
    torch.testing.assert_close(w, expected_w)


def test_uniform_and_learned_weights():
    out = _outputs()
    class_text = F.normalize(torch.randn(3, 4, 8), dim=-1)
    labels = torch.zeros(6, dtype=torch.long)
    uni = ViewFusion(FusionConfig(weights="uniform"), class_text)(out, labels)
    torch.testing.assert_close(uni["logits"], out["logits"].mean(0))
    learned = ViewFusion(FusionConfig(weights="learned"), class_text)
    with torch.no_grad():
        learned.view_logits.copy_(torch.tensor([2.0, 0.0, -1.0]))
    w = learned(out, labels)["weights"]
    torch.testing.assert_close(w[:, 0], torch.softmax(torch.tensor([2.0, 0.0, -1.0]), 0))


def test_pred_condition_uses_the_teachers_prediction():
    out = _outputs()
    class_text = F.normalize(torch.randn(3, 4, 8), dim=-1)
    pred = out["logits"].mean(0).argmax(-1)
    by_pred = ViewFusion(FusionConfig(condition="pred"), class_text)(out, torch.zeros(6, dtype=torch.long))
    by_label = ViewFusion(FusionConfig(condition="label"), class_text)(out, pred)
    torch.testing.assert_close(by_pred["weights"], by_label["weights"])


def test_class_granularity_averages_within_each_class():
    w = torch.tensor([[0.2, 0.6, 0.5], [0.8, 0.4, 0.5]])
    classes = torch.tensor([1, 1, 0])
    avg = average_per_class(w, classes, num_classes=3)
    torch.testing.assert_close(avg, torch.tensor([[0.4, 0.4, 0.5], [0.6, 0.6, 0.5]]))


def test_clip_image_weights_need_an_image_tower():
    with pytest.raises(ValueError, match="open_clip"):
        ViewFusion(FusionConfig(weights="clip_image"), torch.randn(3, 4, 8))


def test_class_prob_scores_compare_views_by_how_well_they_single_out_the_class():
    from tmkd_core.fusion import class_prob_scores

    t = torch.eye(3, 4).expand(2, 3, 4)  # (V=2, K=3, D=4): orthonormal class texts
    flat = torch.tensor([1.0, 1.0, 1.0, 0.0])  # view 0: cos 0.577 to every class
    sharp = torch.tensor([0.5, 0.0, 0.0, 0.75 ** 0.5])  # view 1: cos 0.5 to class 0, 0 to the others
    q = torch.stack([flat, sharp])[:, None]  # (V, B=1, D)
    c = torch.tensor([0])
    cos = semantic_scores(q, t, c)[:, 0]
    prob = class_prob_scores(q, t, c, tau_s=0.1)[:, 0]
    assert cos[0] > cos[1]  # raw cosine prefers the view that is close to every class
    assert prob[1] > prob[0]  # the class probability prefers the one that singles out class 0
    torch.testing.assert_close(prob[0], torch.tensor(1 / 3))
    torch.testing.assert_close(prob[1], torch.softmax(torch.tensor([0.5, 0.0, 0.0]) / 0.1, 0)[0])
