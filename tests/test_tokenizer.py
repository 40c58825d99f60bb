"""The GPT-2 tokenizer: bundled, offline, and identical to tiktoken's r50k_base."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib import resources

import pytest

from article_gpt.data.tokenizer import EOT, GPT2_SHA256, decode, encode, get_encoding
from article_gpt.errors import ConfigError

# Obtained once with this package's bundled loader: encode(KNOWN_TEXT). The bundled
# assets/gpt2.tiktoken is byte-identical to the file tiktoken downloads for r50k_base
# (sha256 306cd27f...d930, checked below), so these are r50k_base's ids ("Hello" = 15496 and
# " world" = 995 are GPT-2's well-known ids).
KNOWN_TEXT = "Hello world! Backpropagation is the chain rule."
KNOWN_IDS = [15496, 995, 0, 5157, 22930, 363, 341, 318, 262, 6333, 3896, 13]

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


def test_known_ids_match_r50k_base():
    assert encode(KNOWN_TEXT) == KNOWN_IDS
    assert encode(KNOWN_TEXT, "r50k_base") == KNOWN_IDS  # both bundled names are the same ranks


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


def test_works_offline_with_an_empty_tiktoken_cache(tmp_path):
    """A fresh interpreter with an empty tiktoken cache and an unreachable proxy still encodes:
    the ranks come from the package file."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "HTTP_PROXY": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    code = f"import json; from article_gpt.data.tokenizer import encode; print(json.dumps(encode({KNOWN_TEXT!r})))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == KNOWN_IDS
    # tiktoken may keep a copy of the local file it read, but nothing else (no download)
    cached = [hashlib.sha256(f.read_bytes()).hexdigest() for f in cache.iterdir()]
    assert set(cached) <= {GPT2_SHA256}


def test_unknown_tokenizer_is_a_config_error():
    with pytest.raises(ConfigError, match="tokenizer='no_such_encoding'") as err:
        get_encoding("no_such_encoding")
    assert "\n" not in str(err.value)  # the entry points print it as one `error: ...` line
