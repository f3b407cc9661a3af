"""The text teacher: a real MiniLM offline, and the open_clip path from a local file."""
import json

import pytest
import torch

from tmkd_core.config import TextConfig
from tmkd_core.priors import VIEWS
from tmkd_core.text import build_text_encoder, class_text_embeddings, prompt_templates, text_identity

from conftest import network_blocked


@pytest.fixture(scope="module")
def minilm():
    with network_blocked():  # loaded, not only used, with no network
        return build_text_encoder(TextConfig(backend="sentence_transformers"))


def test_minilm_ranks_related_prompts_above_unrelated(minilm, no_network):
    e = minilm.encode(["a photo of a cat.", "a photo of a kitten.", "a photo of a truck.",
                       "an edge map of a cat.", "a line drawing of a cat."])
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # cat ~ kitten, far from truck
    assert sim[3, 4] > sim[3, 2]  # two edge prompts of a cat closer than a truck photo
    torch.testing.assert_close(e.norm(dim=1), torch.ones(5))


def test_class_embeddings_are_normalised_means_and_cached(minilm, tmp_path, no_network):
    classes = ["cat", "truck", "frog"]
    views = ("rgb", "edge", "hf")
    t = class_text_embeddings(TextConfig(), classes, views, cache_dir=tmp_path, encoder=minilm)
    assert t.shape == (3, 3, minilm.dim)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3, 3))
    manual = minilm.encode([tpl.format("frog") for tpl in VIEWS.get("edge").templates]).mean(0)
    torch.testing.assert_close(t[1, 2], manual / manual.norm(), atol=1e-5, rtol=0)
    # the on-disk cache answers without an encoder
    assert len(list(tmp_path.glob("text_*.pt"))) == 1
    again = class_text_embeddings(TextConfig(), classes, views, cache_dir=tmp_path)
    torch.testing.assert_close(again, t)


def test_generic_prompts_use_the_rgb_templates_for_every_view(minilm):
    assert prompt_templates("generic", ("rgb", "edge", "hf"))["hf"] == VIEWS.get("rgb").templates
    t = class_text_embeddings(TextConfig(prompts="generic"), ["cat", "dog"], ("rgb", "edge"), encoder=minilm)
    torch.testing.assert_close(t[0], t[1])


TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_file(tmp_path_factory):
    """A tiny open_clip model: its config registered, its random weights written to a file."""
    import open_clip

    folder = tmp_path_factory.mktemp("tiny_clip")
    (folder / "tmkd-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model("tmkd-tiny-clip", pretrained=None)
    weights = folder / "tiny.pt"
    torch.save(model.state_dict(), weights)
    tokens = open_clip.get_tokenizer("tmkd-tiny-clip")(["a photo of a cat."])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.eval().encode_text(tokens), dim=-1)
    return weights, expected


def test_open_clip_loads_local_weights_offline(tiny_clip_file, no_network):
    weights, expected = tiny_clip_file
    from tmkd_core.text import sha256_of

    cfg = TextConfig(backend="open_clip", model="tmkd-tiny-clip", pretrained=str(weights), sha256=sha256_of(weights))
    enc = build_text_encoder(cfg)
    assert enc.dim == 16
    torch.testing.assert_close(enc.encode(["a photo of a cat."]), expected, atol=1e-5, rtol=0)
    assert text_identity(cfg) == enc.identity and sha256_of(weights) in enc.identity
    img = enc.encode_image(torch.rand(2, 3, 32, 32))
    assert img.shape == (2, 16)


def test_open_clip_rejects_a_bad_checksum_and_unknown_names(tiny_clip_file, no_network):
    weights, _ = tiny_clip_file
    with pytest.raises(ValueError, match="checksum mismatch"):
        build_text_encoder(TextConfig(backend="open_clip", model="tmkd-tiny-clip", pretrained=str(weights),
                                      sha256="0" * 64))
    with pytest.raises(KeyError, match="ViT-B-32"):
        build_text_encoder(TextConfig(backend="open_clip", model="no-such-model", pretrained=str(weights)))
    with pytest.raises(FileNotFoundError, match="neither a file nor a tag"):
        build_text_encoder(TextConfig(backend="open_clip", model="ViT-B-32", pretrained="/no/such/file.pt"))


def test_minilm_has_no_image_tower(minilm):
    with pytest.raises(NotImplementedError, match="open_clip"):
        minilm.encode_image(torch.rand(1, 3, 32, 32))


def test_open_clip_checksums_compare_in_any_case_and_a_wrong_architecture_names_the_file(tiny_clip_file, no_network):
    import open_clip

    from tmkd_core.text import sha256_of

    weights, _ = tiny_clip_file
    upper = TextConfig(backend="open_clip", model="tmkd-tiny-clip", pretrained=str(weights),
                       sha256=sha256_of(weights).upper())
    assert build_text_encoder(upper).dim == 16
    wide = {**TINY_CLIP, "embed_dim": 24}
    (weights.parent / "tmkd-tiny-clip-wide.json").write_text(json.dumps(wide))
    open_clip.add_model_config(weights.parent)
    with pytest.raises(ValueError, match=rf"{weights}.*does not fit.*tmkd-tiny-clip-wide"):
        build_text_encoder(TextConfig(backend="open_clip", model="tmkd-tiny-clip-wide", pretrained=str(weights)))


def test_weights_are_checked_before_anything_trains(tiny_clip_file, cifar_cfg, tmp_path, no_network):
    from tmkd_core.config import method_config
    from tmkd_core.experiment import Pipeline

    weights, _ = tiny_clip_file
    cfg = method_config(cifar_cfg, "TMKD", {"text.backend": "open_clip", "text.model": "tmkd-tiny-clip",
                                            "text.pretrained": str(weights), "text.sha256": "0" * 64,
                                            "data.root": str(tmp_path)})
    with pytest.raises(ValueError, match="checksum mismatch"):
        Pipeline(cfg)  # at construction: no data loaded, no teacher trained
    assert not any(tmp_path.iterdir())


def test_an_uncached_clip_tag_fails_before_any_teacher_trains(cifar_cfg, tmp_path, no_network):
    from tmkd_core.config import method_config
    from tmkd_core.experiment import Pipeline

    cfg = method_config(cifar_cfg, "TMKD", {"text.backend": "open_clip", "text.model": "ViT-B-32",
                                            "text.pretrained": "openai", "text.cache_dir": str(tmp_path / "clip"),
                                            "teacher.seed": 7077})  # a teacher no other test trains
    pipe = Pipeline(cfg)
    pipe.artefact("rgb_teacher").unlink(missing_ok=True)  # one a run of this test without the fix left
    with pytest.raises(RuntimeError, match="text.pretrained='openai'.*set text.pretrained to the local file"):
        pipe.train_or_load_teachers()
    partial = pipe.partial_checkpoint("rgb_teacher")
    assert not partial.exists() and not partial.with_suffix(".final.pt").exists()
