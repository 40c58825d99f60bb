"""OpenAI's GPT-2 weights, through Hugging Face ``transformers``, into our GPT.

``model.pretrained`` names a hub model (``gpt2``, ``gpt2-medium``, ...: needs a network once,
then Hugging Face's cache) or a local directory written by ``save_pretrained`` / ``hf download``
(offline machines, clusters without internet). Two steps, so a bad source fails fast:

- ``resolve_shape``: reads only the checkpoint's ``config.json`` (no torch, no weights) and
  returns the model config with the shape filled in. Keys left null take the checkpoint's
  value; ``block_size`` may be shorter than its positions (the position table is cut); any
  other value that contradicts it is a ``ConfigError`` naming the key.
- ``load_pretrained``: copies the weights into a GPT of that shape. GPT-2's attention and MLP
  use ``Conv1D`` layers that store weights as (in, out); ``nn.Linear`` wants (out, in), so
  those are transposed.

``transformers`` is an optional extra: ``pip install -e ".[hf]"``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from article_gpt.errors import ConfigError, describe

if TYPE_CHECKING:  # torch stays unimported until weights are loaded: validation must be cheap
    import torch

    from article_gpt.model.gpt import GPT

INSTALL_HINT = 'needs Hugging Face transformers: pip install -e ".[hf]"'
# GPT-2's activation names: "gelu_new" (the original), "gelu_pytorch_tanh" and "gelu_fast" are
# the tanh approximation; "gelu" is the exact erf form.
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}
# Hugging Face GPT-2 module -> ours, inside each block; the first four are Conv1D (transposed).
BLOCK_WEIGHTS = {"attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj", "mlp.c_fc": "ffn.fc",
                 "mlp.c_proj": "ffn.proj", "ln_1": "ln1", "ln_2": "ln2"}
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def local_dir(source: str) -> Path | None:
    """``source`` as a local directory, None for a hub name; a path that does not exist is an error."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if source.startswith(("/", ".", "~")) or path.exists():
        raise ConfigError(f"model.pretrained={source}: no such directory (a Hugging Face hub name such as "
                          "gpt2, or a directory holding config.json and the weights)")
    return None


@functools.cache
def _hub_dir(source: str) -> Path:
    """The folder of a hub checkpoint's config.json, asked of the hub once per process: the shape
    is resolved for the guards before the run and again in the run."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ConfigError(f"model.pretrained={source}: {INSTALL_HINT}") from None
    try:
        return Path(hf_hub_download(source, "config.json")).parent
    except Exception as err:  # no network, unknown repo, gated repo: one line either way
        raise ConfigError(f"model.pretrained={source}: cannot fetch its config.json from the Hugging Face hub "
                          f"({describe(err, 120)}); offline, pass a local directory") from None


def read_hf_config(source: str) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict, from a local directory or the hub."""
    path = local_dir(source) or _hub_dir(source)
    file = path / "config.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.pretrained={source}: cannot read {file} ({describe(err, 120)})") from None


def checkpoint_shape(hf: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Our GPTConfig shape keys for a Hugging Face GPT-2 config, or a ConfigError for variants
    the architecture does not reproduce exactly."""
    def refuse(what: str) -> ConfigError:
        return ConfigError(f"model.pretrained={source}: {what}; only GPT-2 checkpoints load")

    if hf.get("model_type") != "gpt2":
        raise refuse(f"model_type={hf.get('model_type')}")
    n_embd, n_head = int(hf["n_embd"]), int(hf["n_head"])
    act = hf.get("activation_function", "gelu_new")
    unsupported = {
        "activation_function": act not in ACTIVATIONS,
        "n_inner": hf.get("n_inner") not in (None, 4 * n_embd),  # our MLP is 4x wide
        "layer_norm_epsilon": hf.get("layer_norm_epsilon", 1e-5) != 1e-5,  # nn.LayerNorm's default
        "scale_attn_weights": hf.get("scale_attn_weights", True) is not True,
        "scale_attn_by_inverse_layer_idx": hf.get("scale_attn_by_inverse_layer_idx", False) is not False,
        "tie_word_embeddings": hf.get("tie_word_embeddings", True) is not True,
        "n_embd": n_embd % n_head != 0,
    }
    for key, bad in unsupported.items():
        if bad:
            raise refuse(f"{key}={hf.get(key)} is not supported")
    return {
        "vocab_size": int(hf["vocab_size"]),
        "block_size": int(hf.get("n_positions", hf.get("n_ctx", 1024))),
        "embedding_dim": n_embd,
        "num_layers": int(hf["n_layer"]),
        "heads": n_head,
        "head_size": n_embd // n_head,  # GPT-2's attention is exactly embedding_dim wide
        "bias": True,
        "tie_weights": True,
        "gelu_approximate": ACTIVATIONS[act],
    }


def resolve_shape(model: Mapping[str, Any]) -> dict[str, Any]:
    """``model`` (a model config with ``pretrained`` set) with the checkpoint's shape filled in."""
    source = str(model["pretrained"])
    shape = checkpoint_shape(read_hf_config(source), source)
    out = dict(model)
    for key, theirs in shape.items():
        ours = model.get(key)
        if ours is None:
            out[key] = theirs
        elif key == "block_size":
            if not isinstance(ours, int) or isinstance(ours, bool) or not 1 <= ours <= theirs:
                raise ConfigError(f"model.block_size={ours}: must be between 1 and the {theirs} positions of "
                                  f"model.pretrained={source} (null takes all {theirs})")
        elif ours != theirs:
            raise ConfigError(f"model.{key}={ours}: contradicts model.pretrained={source}, which has "
                              f"{key}={theirs}; leave it null to take the checkpoint's")
    return out


def convert_state_dict(hf: Mapping[str, torch.Tensor], num_layers: int, block_size: int) -> dict[str, torch.Tensor]:
    """A Hugging Face GPT-2 state dict (GPT2LMHeadModel or GPT2Model keys) as our GPT's."""
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    out = {
        "tok_emb.weight": hf["wte.weight"],
        "pos_emb.weight": hf["wpe.weight"][:block_size],  # a shorter block keeps the first positions
        "ln_f.weight": hf["ln_f.weight"],
        "ln_f.bias": hf["ln_f.bias"],
    }
    for i in range(num_layers):
        for theirs, ours in BLOCK_WEIGHTS.items():
            weight = hf[f"h.{i}.{theirs}.weight"]
            out[f"blocks.{i}.{ours}.weight"] = weight.t() if theirs in CONV1D else weight
            out[f"blocks.{i}.{ours}.bias"] = hf[f"h.{i}.{theirs}.bias"]
    out["lm_head.weight"] = out["tok_emb.weight"]  # tied, as in GPT-2
    return {k: v.float().contiguous() for k, v in out.items()}


def load_pretrained(model: GPT, source: str) -> None:
    """Copy the weights of GPT-2 ``source`` into ``model`` (built from ``resolve_shape``'s config)."""
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        raise ConfigError(f"model.pretrained={source}: {INSTALL_HINT}") from None
    path = local_dir(source)
    try:
        hf_model = GPT2LMHeadModel.from_pretrained(str(path) if path else source)
    except Exception as err:
        raise ConfigError(f"model.pretrained={source}: cannot load its weights ({describe(err, 160)})") from None
    cfg = model.cfg
    weights = convert_state_dict(hf_model.state_dict(), cfg.num_layers, cfg.block_size)
    model.load_state_dict(weights, strict=True)
