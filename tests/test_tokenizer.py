"""The GPT-2 tokenizer: bundled, offline, and identical to tiktoken's r50k_base."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib import resources

import pytest
import tiktoken

from article_gpt.data.tokenizer import EOT, GPT2_SHA256, decode, encode, get_encoding
from article_gpt.errors import ConfigError

KNOWN_TEXT = "Hello world! Backpropagation is the chain rule."

# Text that exercises every branch of the split pattern: contractions, letters, digit runs (GPT-2
# keeps them whole, cl100k cuts them in threes), punctuation runs, whitespace runs before words,
# at line ends and at the end, tabs, CRLF, non-ASCII letters and digits, emoji, the EOT token.
VARIED = (
    "It's what they'd've said: we'll see, you're right, I'm sure, they've gone; DON'T SHOUT.\n"
    "Numbers: 3.14159, 1234567890, -42, 1e-9, 2026-11-25, \u0661\u0662\u0663, 100%!!! ...???\n"
    "def f(x):\n    return {'a': [x ** 2, x // 3]}  # code\n\t\tindented\r\n"
    "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m; \u03bb\u03cc\u03b3\u03bf\u03c2; \u043f\u0440\u0438\u0432\u0435\u0442; "
    "\u6df1\u5ea6\u5b66\u7fd2 \ud55c\uad6d\uc5b4\n"
    "emoji \U0001F916\U0001F9E0 family \U0001F468\u200d\U0001F469\u200d\U0001F467 flag \U0001F1EB\U0001F1F7\n"
    "   three spaces,\t\ttabs,  \n\n\n  blank lines and trailing spaces   \n"
    "<|endoftext|>a new document   "
)


@pytest.fixture(scope="module")
def tiktoken_r50k():
    """tiktoken's own r50k_base, built by tiktoken_ext.openai_public.r50k_base() (its pattern,
    special tokens and vocabulary size) from the bundled BPE file instead of the download."""
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext import openai_public

    asked = []

    def from_bundled_file(blobpath, expected_hash=None):
        asked.append((blobpath, expected_hash))
        with resources.as_file(resources.files("article_gpt") / "assets" / "gpt2.tiktoken") as local:
            return load_tiktoken_bpe(str(local), expected_hash=expected_hash)

    original = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = from_bundled_file
    try:
        spec = openai_public.r50k_base()
    finally:
        openai_public.load_tiktoken_bpe = original
    (blobpath, expected_hash), = asked
    assert blobpath.endswith("/r50k_base.tiktoken") and expected_hash == GPT2_SHA256  # the same file
    return tiktoken.Encoding(**spec)


ROUND_TRIP = [
    "Plain English, with punctuation: it's 3.14 -- isn't it?",
    "def f(x):\n    return {'a': [x ** 2, x // 3]}  # code\n\t\tindented\r\n",
    "Accents: café, naïve, Ångström, señor; Greek: λόγος; Cyrillic: привет",
    "CJK: 深度学习と自然言語処理 한국어",
    "Emoji: 🤖🧠🚀 and a family 👨‍👩‍👧 and flags 🇫🇷",
    "  leading and trailing whitespace \n\n",
]


@pytest.mark.parametrize("text", ROUND_TRIP, ids=["english", "code", "accents", "cjk", "emoji", "whitespace"])
def test_round_trip(text):
    ids = encode(text)
    assert ids and all(0 <= i < 50257 for i in ids)
    assert decode(ids) == text


def test_pattern_is_tiktokens_r50k_pattern(tiktoken_r50k):
    assert get_encoding("gpt2")._pat_str == tiktoken_r50k._pat_str


@pytest.mark.parametrize("name", ["gpt2", "r50k_base"])
def test_ids_equal_tiktokens_own_r50k_base(tiktoken_r50k, name):
    """Id for id against tiktoken's construction, on varied text, line by line and whole."""
    ours = get_encoding(name)
    assert (ours.n_vocab, ours.eot_token) == (tiktoken_r50k.n_vocab, tiktoken_r50k.eot_token) == (50257, 50256)
    for text in [VARIED, *VARIED.splitlines(keepends=True), *ROUND_TRIP]:
        expected = tiktoken_r50k.encode(text, allowed_special={EOT})
        assert encode(text, name) == expected, text
    assert encode(KNOWN_TEXT)[:2] == [15496, 995]  # "Hello", " world": GPT-2's well-known ids


def test_bundled_file_is_r50k_base():
    data = (resources.files("article_gpt") / "assets" / "gpt2.tiktoken").read_bytes()
    assert hashlib.sha256(data).hexdigest() == GPT2_SHA256
    assert GPT2_SHA256.startswith("306cd27f") and GPT2_SHA256.endswith("d930")


def test_endoftext_is_50256():
    enc = get_encoding("gpt2")
    assert enc.eot_token == 50256
    assert enc.n_vocab == 50257
    assert encode(EOT) == [50256]
    assert encode(f"a{EOT}b") == [*encode("a"), 50256, *encode("b")]
    assert decode([50256]) == EOT


def test_works_offline_with_an_empty_tiktoken_cache(tmp_path, tiktoken_r50k):
    """A fresh interpreter with an empty tiktoken cache and an unreachable proxy still encodes:
    the ranks come from the package file."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "HTTP_PROXY": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    code = f"import json; from article_gpt.data.tokenizer import encode; print(json.dumps(encode({KNOWN_TEXT!r})))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == tiktoken_r50k.encode(KNOWN_TEXT)
    # tiktoken may keep a copy of the local file it read, but nothing else (no download)
    cached = [hashlib.sha256(f.read_bytes()).hexdigest() for f in cache.iterdir()]
    assert set(cached) <= {GPT2_SHA256}


def test_unknown_tokenizer_is_a_config_error():
    with pytest.raises(ConfigError, match="tokenizer='no_such_encoding'") as err:
        get_encoding("no_such_encoding")
    assert "\n" not in str(err.value)  # the entry points print it as one `error: ...` line
