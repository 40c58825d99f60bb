"""Corpora -> token ids (cached) -> windows -> batches, and the errors a user can hit."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import ROOT

from article_gpt.data import corpus as data
from article_gpt.data import token_cache
from article_gpt.data.corpus import TextDataModule, TokenWindows, read_documents, tokenize_documents
from article_gpt.data.files import resolve_files
from article_gpt.data.tokenizer import get_encoding
from article_gpt.errors import DataError

EOT = 50256
DOCS = {  # three documents of clearly different lengths (about 40% / 30% / 30% of the tokens)
    "a.txt": "Gradient descent walks downhill on the loss surface, one small step at a time. " * 8,
    "b.md": "# Attention\nEvery token looks back at the tokens before it and mixes their values. " * 6,
    "c.txt": "Overfitting means memorizing the training set instead of learning its structure. " * 6,
}


def toks(text: str) -> list[int]:
    return get_encoding("gpt2").encode_ordinary(text)


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for name, text in DOCS.items():
        (d / name).write_text(text, encoding="utf-8")
    return d


def datamodule(train: str, val: str | None, block_size: int, cache, val_fraction=None, seed=0, stride=None,
               train_max=None, val_max=None, **loader) -> TextDataModule:
    dm = TextDataModule(train={"path": train, "max_samples": train_max}, val={"path": val, "max_samples": val_max},
                        block_size=block_size, val_fraction=val_fraction, stride=stride, cache_dir=str(cache),
                        seed=seed, dataloader={"batch_size": 4, **loader})
    dm.setup("fit")
    return dm


def batches(loader) -> list[torch.Tensor]:
    return [x for x, _ in loader]


# ---- sources -------------------------------------------------------------------------------
def test_resolve_file_directory_and_glob(corpus):
    (corpus / "notes.rst").write_text("not a text suffix")
    sub = corpus / "sub"
    sub.mkdir()
    (sub / "d.md").write_text("nested")
    assert resolve_files(str(corpus / "a.txt")) == [corpus / "a.txt"]
    # a directory: every .txt/.md inside (recursively), sorted; other suffixes ignored
    assert resolve_files(str(corpus)) == [corpus / "a.txt", corpus / "b.md", corpus / "c.txt", sub / "d.md"]
    assert resolve_files(str(corpus / "*.txt")) == [corpus / "a.txt", corpus / "c.txt"]
    assert resolve_files(str(corpus / "**" / "*.md")) == [corpus / "b.md", sub / "d.md"]


def test_documents_are_joined_with_endoftext(corpus):
    docs = read_documents(str(corpus))
    assert [p.name for p, _ in docs] == ["a.txt", "b.md", "c.txt"]
    ids = tokenize_documents(docs, "gpt2", cache_dir=None)
    assert ids.dtype == np.uint16
    assert ids.tolist() == toks(DOCS["a.txt"]) + [EOT] + toks(DOCS["b.md"]) + [EOT] + toks(DOCS["c.txt"])


def test_literal_endoftext_in_a_document_stays_text(tmp_path):
    f = tmp_path / "doc.txt"
    f.write_text("before <|endoftext|> after")
    ids = tokenize_documents(read_documents(str(f)), "gpt2", cache_dir=None).tolist()
    assert EOT not in ids and ids == toks("before <|endoftext|> after")


# ---- token cache ---------------------------------------------------------------------------
class NoTokenizing:
    """The real encoding, except that tokenizing raises: proves a cache hit re-tokenizes nothing."""

    def __init__(self, name: str) -> None:
        real = get_encoding(name)
        self.n_vocab, self.eot_token = real.n_vocab, real.eot_token

    def encode_ordinary(self, text):
        raise AssertionError("re-tokenized although the cache holds these ids")


def test_token_cache_is_reused_and_keyed_by_content(corpus, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    first = tokenize_documents(read_documents(str(corpus)), "gpt2", str(cache)).tolist()
    (cache_file,) = cache.iterdir()
    assert token_cache.read(cache_file).tolist() == first  # the ids, then a trailer that proves them whole

    with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="article_gpt.data.corpus"):
        m.setattr(data, "get_encoding", NoTokenizing)
        second = tokenize_documents(read_documents(str(corpus)), "gpt2", str(cache))
    assert second.tolist() == first
    assert f"token cache hit: {cache_file}" in caplog.text
    assert list(cache.iterdir()) == [cache_file]

    (corpus / "b.md").write_text(DOCS["b.md"] + " One more sentence.")
    changed = tokenize_documents(read_documents(str(corpus)), "gpt2", str(cache)).tolist()
    assert changed != first
    assert len(list(cache.iterdir())) == 2  # a new file: a changed document never hits a stale cache
    assert token_cache.read(cache_file).tolist() == first


# ---- windows -------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "block", "stride"), [(50, 8, 8), (50, 8, 3), (9, 8, 8), (41, 8, 1), (100, 16, 7)])
def test_window_count_and_contents(n, block, stride):
    ids = np.arange(n, dtype=np.uint16)
    ds = TokenWindows(ids, block, stride)
    assert len(ds) == (n - block - 1) // stride + 1
    for i in range(len(ds)):
        x, y = ds[i]
        s = i * stride
        assert x.dtype == torch.int64 and x.shape == (block,)
        assert x.tolist() == list(range(s, s + block)) and y.tolist() == list(range(s + 1, s + block + 1))


def test_stride_block_size_is_non_overlapping(corpus, tmp_path):
    dm = datamodule(str(corpus / "a.txt"), str(corpus / "c.txt"), 8, tmp_path / "cache", stride=8, shuffle=False)
    xs = torch.cat(batches(dm.train_dataloader()))
    assert dm.stride == 8
    assert len(dm.train_set) == (len(dm.train_ids) - 9) // 8 + 1
    assert xs.flatten().tolist() == dm.train_ids[: xs.numel()].tolist()  # the inputs tile the corpus

    overlapping = datamodule(str(corpus / "a.txt"), str(corpus / "c.txt"), 8, tmp_path / "cache", stride=2)
    assert len(overlapping.train_set) == (len(dm.train_ids) - 9) // 2 + 1


def test_max_samples_caps_windows(corpus, tmp_path):
    dm = datamodule(str(corpus / "a.txt"), str(corpus / "c.txt"), 8, tmp_path / "cache", stride=8, train_max=5,
                    val_max=3)
    assert (len(dm.train_set), len(dm.val_set)) == (5, 3)
    assert sum(len(x) for x in batches(dm.train_dataloader())) == 5
    big = datamodule(str(corpus / "a.txt"), str(corpus / "c.txt"), 8, tmp_path / "cache", stride=8, train_max=10**6)
    assert len(big.train_set) == (len(big.train_ids) - 9) // 8 + 1  # a cap above the count changes nothing


def test_fixed_windows_shuffled_by_seed_val_in_order(corpus, tmp_path):
    args = (str(corpus / "a.txt"), str(corpus / "c.txt"), 8, tmp_path / "cache")
    run1 = torch.cat(batches(datamodule(*args, stride=8, seed=3).train_dataloader()))
    run2 = torch.cat(batches(datamodule(*args, stride=8, seed=3).train_dataloader()))
    other = torch.cat(batches(datamodule(*args, stride=8, seed=4).train_dataloader()))
    in_order = torch.cat(batches(datamodule(*args, stride=8, shuffle=False).train_dataloader()))
    assert torch.equal(run1, run2)  # same seed, same order
    assert not torch.equal(run1, in_order) and not torch.equal(run1, other)
    assert sorted(map(tuple, run1.tolist())) == sorted(map(tuple, in_order.tolist()))  # a permutation

    dm = datamodule(*args, stride=8, seed=3)
    val = torch.cat(batches(dm.val_dataloader()))
    assert val.flatten().tolist() == dm.val_ids[: val.numel()].tolist()  # shuffle=True never touches val


def test_validation_never_reads_the_training_set(tmp_path):
    train, val = ROOT / "data" / "train.txt", ROOT / "data" / "val.txt"
    dm = datamodule(str(train), str(val), 32, tmp_path / "cache")
    xs, ys = zip(*dm.val_dataloader())
    xs, ys = torch.cat(xs), torch.cat(ys)
    val_tokens = toks(val.read_text(encoding="utf-8"))
    n = len(xs)
    assert n == (len(val_tokens) - 33) // 32 + 1  # every val window, once
    assert xs.flatten().tolist() == val_tokens[: n * 32]
    assert ys[:, -1].tolist() == [val_tokens[32 * (i + 1)] for i in range(n)]
    assert dm.train_ids.tolist() == toks(train.read_text(encoding="utf-8"))


# ---- split mode ----------------------------------------------------------------------------
def test_split_at_document_boundary_deterministic_and_disjoint(corpus, tmp_path):
    dm = datamodule(str(corpus), None, 8, tmp_path / "cache", val_fraction=0.3)
    again = datamodule(str(corpus), None, 8, tmp_path / "cache", val_fraction=0.3)
    assert dm.train_ids.tolist() == again.train_ids.tolist() and dm.val_ids.tolist() == again.val_ids.tolist()
    a, b, c = (toks(DOCS[k]) for k in ("a.txt", "b.md", "c.txt"))
    # the cut lands on the EOT between b and c (the boundary nearest 70%), which neither side keeps
    assert dm.train_ids.tolist() == a + [EOT] + b
    assert dm.val_ids.tolist() == c
    assert len(c) / (len(a) + len(b) + len(c)) == pytest.approx(0.3, abs=0.1)


def test_split_without_boundary_cuts_at_the_fraction(corpus, tmp_path):
    dm = datamodule(str(corpus / "a.txt"), None, 8, tmp_path / "cache", val_fraction=0.25)
    ids = toks(DOCS["a.txt"])
    cut = round(len(ids) * 0.75)
    assert dm.train_ids.tolist() == ids[:cut] and dm.val_ids.tolist() == ids[cut:]


# ---- errors --------------------------------------------------------------------------------
def test_corpus_shorter_than_a_block(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("hello world")  # 2 tokens
    with pytest.raises(DataError) as err:
        datamodule(str(f), str(f), 64, tmp_path / "cache")
    assert str(f) in str(err.value) and "2 tokens" in str(err.value) and "block_size + 1 = 65" in str(err.value)


def test_val_split_too_short_names_the_fraction(corpus, tmp_path):
    with pytest.raises(DataError, match=r"val \(val_fraction=0.01\) split has \d+ tokens, fewer than"):
        datamodule(str(corpus / "a.txt"), None, 64, tmp_path / "cache", val_fraction=0.01)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("nope.txt", None, "nope.txt: no such file or directory"),
        ("empty.txt", b"", "empty.txt: file is empty"),
        ("blank.md", b" \n\t\n", "blank.md: file is empty"),
        ("latin1.txt", b"caf\xe9 au lait", r"latin1.txt: not UTF-8 text \(byte 3\)"),
        ("emptydir", "dir", r"emptydir: directory holds no .txt/.md files"),
        ("*.nothing", None, r"\*.nothing: glob matches no files"),
    ],
    ids=["missing", "empty", "whitespace-only", "non-utf8", "empty-dir", "glob-no-match"],
)
def test_bad_sources_raise_data_error(tmp_path, name, content, message):
    source = tmp_path / name
    if content == "dir":
        source.mkdir()
    elif content is not None:
        source.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        datamodule(str(source), str(ROOT / "data" / "val.txt"), 8, tmp_path / "cache")
    assert str(err.value).startswith(str(source))  # the full path, not just a name


# ---- random training windows (data.stride=null, the default) -------------------------------
def epoch_windows(dm: TextDataModule, epoch: int) -> torch.Tensor:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)  # what Lightning does at the start of each training epoch
    return torch.cat(batches(loader))


def test_random_windows_fresh_each_epoch_seeded_by_seed_and_epoch(corpus, tmp_path):
    args = (str(corpus / "a.txt"), str(corpus / "c.txt"), 8, tmp_path / "cache")
    dm = datamodule(*args, seed=3)
    ids = dm.train_ids.tolist()
    e0, e1 = epoch_windows(dm, 0), epoch_windows(dm, 1)
    assert len(e0) == len(e1) == (len(ids) - 9) // 8 + 1  # as many per epoch as fixed windows give
    assert not torch.equal(e0, e1)  # a fresh draw each epoch
    # more distinct starts than the fixed windows' multiples of 8
    starts = set()
    for e in range(4):
        x = epoch_windows(dm, e)
        for row in x.tolist():  # every window is a real slice of the corpus
            s = next(i for i in range(len(ids) - 8) if ids[i : i + 8] == row)
            starts.add(s)
    assert any(s % 8 for s in starts)
    # the draw depends on (seed, epoch) only: a fresh module (a resumed run) at epoch 1 draws
    # exactly what this one drew after epoch 0, whatever came before
    again = datamodule(*args, seed=3)
    assert torch.equal(epoch_windows(again, 1), e1) and torch.equal(epoch_windows(again, 0), e0)
    assert not torch.equal(epoch_windows(datamodule(*args, seed=4), 0), e0)
    # validation keeps fixed windows in order
    val = torch.cat(batches(dm.val_dataloader()))
    assert val.flatten().tolist() == dm.val_ids[: val.numel()].tolist()
    capped = datamodule(*args, seed=3, train_max=5)
    assert len(epoch_windows(capped, 0)) == 5


def test_lightning_sets_the_epoch_of_the_random_windows(corpus, tmp_path):
    """Through a real Trainer: each epoch trains on the sampler's draw for that epoch."""
    import lightning as L

    class Record(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[list[list[int]]] = []

        def on_train_epoch_start(self):
            self.seen.append([])

        def training_step(self, batch, _):
            self.seen[-1] += batch[0].tolist()
            return self.w.sum() * 0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = datamodule(str(corpus / "a.txt"), str(corpus / "c.txt"), 8, tmp_path / "cache", seed=5)
    module = Record()
    L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, accelerator="cpu").fit(module, datamodule=dm)
    fresh = datamodule(str(corpus / "a.txt"), str(corpus / "c.txt"), 8, tmp_path / "cache", seed=5)
    assert module.seen == [epoch_windows(fresh, e).tolist() for e in range(3)]
