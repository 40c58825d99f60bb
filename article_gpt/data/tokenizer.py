"""GPT-2 tokenization through tiktoken, with the BPE ranks shipped in the package.

tiktoken normally downloads its BPE files on first use, which fails offline. The GPT-2
ranks are bundled (``assets/gpt2.tiktoken``, identical to tiktoken's r50k_base file) and
loaded through tiktoken's own loader with the expected hash, so a corrupted copy is caught.
Any other encoding name is loaded the usual (online, then cached) way.
"""

from __future__ import annotations

import functools
from importlib import resources

import tiktoken
from tiktoken.load import load_tiktoken_bpe

from article_gpt.errors import ConfigError

GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT = "<|endoftext|>"
# GPT-2's pre-tokenization split, in the possessive-quantifier form tiktoken uses for r50k.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
BUNDLED = ("gpt2", "r50k_base")


@functools.cache
def get_encoding(name: str = "gpt2") -> tiktoken.Encoding:
    """The tiktoken encoding called ``name``; ``gpt2``/``r50k_base`` need no network."""
    if name in BUNDLED:
        path = resources.files("article_gpt") / "assets" / "gpt2.tiktoken"
        with resources.as_file(path) as local:
            ranks = load_tiktoken_bpe(str(local), expected_hash=GPT2_SHA256)
        return tiktoken.Encoding(
            name=name,
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={EOT: 50256},
            explicit_n_vocab=50257,
        )
    try:
        return tiktoken.get_encoding(name)
    except ValueError as err:  # unknown name; tiktoken's message goes on over several lines
        first_line = (str(err).strip() or "unknown").splitlines()[0]
        raise ConfigError(f"tokenizer={name!r} is not a tiktoken encoding ({first_line})") from None
    except Exception as err:  # download failed: typically no network
        raise ConfigError(
            f"tokenizer={name!r} could not be loaded ({type(err).__name__}); only "
            f"{'/'.join(BUNDLED)} work offline"
        ) from None


def encode(text: str, name: str = "gpt2") -> list[int]:
    """Token ids of ``text``; a literal ``<|endoftext|>`` in the text becomes the EOT token."""
    return get_encoding(name).encode(text, allowed_special={EOT})


def decode(ids: list[int], name: str = "gpt2") -> str:
    return get_encoding(name).decode(ids)
