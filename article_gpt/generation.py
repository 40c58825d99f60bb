"""What `python generate.py` does: read the prompts, load a checkpoint, decode, print or write.

The options are checked before torch is imported (``config.validate_generate``), so a bad value
fails at once with one line; ``article_gpt.model.decoding`` does the decoding itself.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, ListConfig

from article_gpt.config.rules import validate_generate
from article_gpt.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from article_gpt.model.checkpoint import LoadedModel


def read_prompts(cfg: DictConfig) -> list[str]:
    """The prompts, in order: ``prompt_file``'s non-blank lines, else ``prompt`` (one or a list)."""
    if cfg.prompt_file is not None:
        path = Path(str(cfg.prompt_file)).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or type(err).__name__
            raise ConfigError(f"prompt_file={path}: cannot be read ({reason})") from None
        prompts = [line for line in lines if line.strip()]
        if not prompts:
            raise ConfigError(f"prompt_file={path}: holds no prompt (one per line)")
        return prompts
    items = list(cfg.prompt) if isinstance(cfg.prompt, ListConfig) else [cfg.prompt]
    if not items or any(p is None or isinstance(p, (DictConfig, ListConfig)) for p in items):
        raise ConfigError(f"prompt={cfg.prompt}: must be a string or a list of strings")
    return [str(p) for p in items]  # prompt=42 arrives as an int


def format_texts(texts: list[str], num_samples: int) -> str:
    """One text as is; several under ``=== prompt i/n, sample j/m ===`` headers."""
    if len(texts) == 1:
        return texts[0] + "\n"
    n_prompts = len(texts) // num_samples
    blocks = []
    for k, text in enumerate(texts):
        i, j = divmod(k, num_samples)
        parts = ([f"prompt {i + 1}/{n_prompts}"] if n_prompts > 1 else []) + (
            [f"sample {j + 1}/{num_samples}"] if num_samples > 1 else [])
        blocks.append(f"=== {', '.join(parts)} ===\n{text}\n")
    return "\n".join(blocks)


def run(cfg: DictConfig) -> None:
    validate_generate(cfg)
    prompts = read_prompts(cfg)
    out = prepare_out(cfg.out)
    from article_gpt.model.checkpoint import load_model  # imports torch: only after the checks
    from article_gpt.runs.dirs import resolve_checkpoint

    device = pick_device("cpu" if cfg.quantize else cfg.device)  # int8: validated as cpu or auto
    loaded = load_model(resolve_checkpoint(str(cfg.ckpt), Path(cfg.paths.log_dir)), device)
    model = loaded.model
    print(f"checkpoint: {loaded.path} ({model.num_params()['params_total'] / 1e6:.1f}M parameters, "
          f"block_size {model.cfg.block_size}, {device})", file=sys.stderr, flush=True)
    if cfg.quantize == "int8":
        from article_gpt.model.quantize import quantize_int8

        before, after = quantize_int8(model)
        print(f"int8 weights: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB (every Linear and the output head; "
              "embeddings stay fp32)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    texts, n_new = complete(cfg, loaded, prompts)
    seconds = time.perf_counter() - t0
    if out is not None:
        out.write_text(format_texts(texts, cfg.num_samples), encoding="utf-8")
    print(f"{n_new} new tokens in {seconds:.2f} s ({n_new / max(seconds, 1e-9):.1f} tokens/s)"
          + (f"; written to {out}" if out is not None else ""), file=sys.stderr)


def complete(cfg: DictConfig, loaded: LoadedModel, prompts: list[str]) -> tuple[list[str], int]:
    """Each prompt's ``num_samples`` texts (prompt + continuation), printed to stdout, and the
    number of new tokens. A single text streams as it is decoded; several come at the end."""
    import torch

    from article_gpt.data.tokenizer import encode, get_encoding
    from article_gpt.model.decoding import compile_step, generate_many, generate_streamed

    model, enc = loaded.model, get_encoding(loaded.tokenizer)
    device = next(model.parameters()).device
    step_fn = None
    if cfg.compile and device.type == "cuda":
        step_fn = compile_step(model)
    elif cfg.compile:
        print("note: compile=true ignored: compiling the decode step pays off on CUDA only", file=sys.stderr)

    rows = [p for p in prompts for _ in range(cfg.num_samples)]
    # An empty prompt starts a fresh document, as the training data does after <|endoftext|>.
    ids = [encode(p, loaded.tokenizer) or [enc.eot_token] for p in rows]
    block = model.cfg.block_size
    if n_long := sum(len(x) > block for x in ids[:: cfg.num_samples]):
        print(f"note: {n_long} prompt(s) longer than block_size={block} tokens: the model sees the last {block}",
              file=sys.stderr)
    options = dict(
        temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, use_cache=cfg.kv_cache,
        eos_id=enc.eot_token if cfg.stop_at_eot else None, step_fn=step_fn,
        generator=torch.Generator(device=device).manual_seed(cfg.seed) if cfg.seed is not None else None,
    )
    sys.stdout.reconfigure(errors="replace")  # a console that cannot show a character gets "?"
    if len(rows) == 1:
        sys.stdout.write(rows[0])
        new = [generate_streamed(model, enc, ids[0], cfg.max_new_tokens, write=_write_now, **options)]
        texts = [rows[0] + enc.decode(new[0])]
        sys.stdout.write("\n")
    else:
        new = generate_many(model, ids, cfg.max_new_tokens, **options)
        texts = [p + enc.decode(n) for p, n in zip(rows, new)]
        sys.stdout.write(format_texts(texts, cfg.num_samples))
    sys.stdout.flush()
    return texts, sum(len(n) for n in new)


def _write_now(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def pick_device(name: str) -> torch.device:
    """``auto`` is the first GPU when there is one; a missing GPU is a config error, not a crash."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"device={name}: this machine has {count} CUDA device(s); use device=cpu or auto")
    return torch.device(name)


def prepare_out(value: str | None) -> Path | None:
    """The ``out=`` file, checked before any work: its folder is created, its text kept until the end."""
    if value is None:
        return None
    path = Path(value).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.open("a", encoding="utf-8").close()
    except OSError as err:
        raise ConfigError(f"out={value}: cannot be written ({err.strerror or type(err).__name__})") from None
    return path
