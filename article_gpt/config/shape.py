"""The shape of a model that starts from pretrained weights (``model.pretrained``), resolved in its
own step before validation: the checkpoint's config.json fills the shape keys left null and
checks those set. It may read a local directory or Hugging Face's cache (or hub), which is why
it is not part of validation."""

from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf, open_dict


def with_pretrained_shape(cfg: DictConfig) -> DictConfig:
    """``cfg`` itself without ``model.pretrained``; otherwise a copy with the shape filled in."""
    if not OmegaConf.select(cfg, "model.pretrained"):
        return cfg
    from article_gpt.model.pretrained import resolve_shape

    out = copy.deepcopy(cfg)
    with open_dict(out.model):
        out.model.merge_with(resolve_shape(OmegaConf.to_container(out.model, resolve=True)))
    return out
