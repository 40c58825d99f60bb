"""Corpora -> token ids (cached once) -> windows of block_size + 1 tokens -> batches.

A source is a file, a directory (every .txt/.md inside, sorted) or a glob. Each file is a
document; documents are joined with <|endoftext|>. The ids are cached as a uint16 memmap
keyed by the sha256 of the encoding name and every document's bytes, so a second run with
the same text re-tokenizes nothing and a changed file can never hit a stale cache.

Training windows start at fresh random offsets every epoch (``RandomWindowSampler``), so a
small corpus gives many distinct contexts instead of the same few dozen fixed windows;
``stride`` set keeps fixed windows. ``windows="documents"`` tiles each document from its own
start instead (every ``stride`` tokens, ``block_size`` by default), so each document's first tokens
open a window; the windows come in a shuffled order. Validation always reads fixed windows, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from article_gpt.data.ids import (  # noqa: F401  (corpus.read_documents, ...: the names callers import)
    document_starts,
    read_documents,
    split_tokens,
    tokenize_documents,
    window_starts,
)
from article_gpt.data.resumable import EpochShuffle, ResumableOrder
from article_gpt.data.tokenizer import get_encoding
from article_gpt.errors import DataError


@dataclass
class SplitConfig:
    path: str | None = None
    max_samples: int | None = None  # cap on windows in this split; None = all


@dataclass
class LoaderConfig:
    batch_size: int = 16
    shuffle: bool = True  # train only; validation is always read in order
    num_workers: int = 0
    drop_last: bool = False
    pin_memory: bool = False


class TokenWindows(Dataset):
    """Windows of ``block_size + 1`` tokens starting every ``stride`` tokens, or at ``starts``:
    x = w[:-1], y = w[1:]."""

    def __init__(self, ids: np.ndarray, block_size: int, stride: int, max_samples: int | None = None,
                 starts: np.ndarray | None = None) -> None:
        self.ids, self.block_size = ids, block_size
        self.starts = window_starts(len(ids), block_size, stride) if starts is None else starts
        if max_samples is not None:
            self.starts = self.starts[:max_samples]

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.starts[i]
        w = torch.from_numpy(self.ids[s : s + self.block_size + 1].astype(np.int64))
        return w[:-1], w[1:]


class RandomWindowSampler(Sampler[int]):
    """``num_samples`` window starts drawn uniformly from ``range(num_starts)`` each epoch.

    The draw depends only on ``(seed, epoch)``: Lightning calls ``set_epoch`` at the start of
    every training epoch (as for a DistributedSampler), so a run resumed at epoch e draws
    exactly the windows the uninterrupted run drew, and two epochs never repeat one draw.
    """

    def __init__(self, num_starts: int, num_samples: int, seed: int) -> None:
        self.num_starts, self.num_samples, self.seed = num_starts, num_samples, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def starts(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])  # seeded by (seed, epoch) alone
        return rng.integers(0, self.num_starts, size=self.num_samples)

    def __iter__(self):
        return iter(self.starts().tolist())

    def __len__(self) -> int:
        return self.num_samples


class TextDataModule(L.LightningDataModule):
    """Train/val windows from explicit files (``val.path``) or one corpus split by ``val_fraction``."""

    def __init__(
        self,
        train: dict,
        val: dict,
        block_size: int,
        val_fraction: float | None = None,
        stride: int | None = None,
        dataloader: dict | None = None,
        tokenizer: str = "gpt2",
        cache_dir: str | None = None,
        seed: int = 0,
        whole_documents: bool = False,
        windows: str = "random",
    ) -> None:
        super().__init__()
        self.windows = windows  # random (random offsets, or fixed with stride) or documents
        self.whole_documents = whole_documents  # data=split: cut only between documents
        self.train_cfg, self.val_cfg = SplitConfig(**train), SplitConfig(**val)
        # stride None: random training windows each epoch, validation every block_size tokens.
        self.block_size, self.stride = block_size, stride or block_size
        self.random_windows = stride is None and windows == "random"
        self.val_fraction = val_fraction
        self.loader = LoaderConfig(**(dataloader or {}))
        self.tokenizer, self.cache_dir, self.seed = tokenizer, cache_dir, seed
        self.train_ids: np.ndarray | None = None
        self.val_ids: np.ndarray | None = None

    def _ids(self, source: str) -> np.ndarray:
        return tokenize_documents(read_documents(source), self.tokenizer, self.cache_dir)

    def _check(self, ids: np.ndarray, what: str, source: str) -> None:
        if len(ids) < self.block_size + 1:
            raise DataError(
                f"{source}: {what} split has {len(ids)} tokens, fewer than "
                f"block_size + 1 = {self.block_size + 1}; lower model.block_size or add text"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.train_ids is not None:
            return
        train_src = self.train_cfg.path
        if self.val_cfg.path:
            self.train_ids, self.val_ids = self._ids(train_src), self._ids(self.val_cfg.path)
            self._check(self.train_ids, "train", train_src)
            self._check(self.val_ids, "val", self.val_cfg.path)
        else:
            ids = self._ids(train_src)
            eot = get_encoding(self.tokenizer).eot_token
            self.train_ids, self.val_ids = split_tokens(ids, self.val_fraction, eot, self.block_size + 1,
                                                        self.whole_documents)
            self._check(self.train_ids, "train", train_src)
            self._check(self.val_ids, f"val (val_fraction={self.val_fraction})", train_src)
        if self.random_windows:  # a window may start anywhere; as many per epoch as fixed windows give
            self.train_set = TokenWindows(self.train_ids, self.block_size, 1)
            count = len(TokenWindows(self.train_ids, self.block_size, self.block_size, self.train_cfg.max_samples))
            self.train_sampler = RandomWindowSampler(len(self.train_set), count, self.seed)
        else:
            starts = None
            if self.windows == "documents":
                eot = get_encoding(self.tokenizer).eot_token
                starts = document_starts(self.train_ids, eot, self.block_size, self.stride)
            self.train_set = TokenWindows(self.train_ids, self.block_size, self.stride, self.train_cfg.max_samples,
                                          starts)
            self.train_sampler = None
        self.val_set = TokenWindows(self.val_ids, self.block_size, self.stride, self.val_cfg.max_samples)

    def token_counts(self) -> dict[str, int]:
        self.setup()
        return {"train_tokens": len(self.train_ids), "val_tokens": len(self.val_ids)}

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        cfg = self.loader
        sampler = self.train_order() if train else None
        # a generator of its own: without one, each epoch's loader draws a seed from torch's
        # global RNG, which a resumed run could not replay (bit-identical resume)
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            shuffle=cfg.shuffle and train and sampler is None,  # random windows come in random order
            drop_last=cfg.drop_last and train,
            num_workers=cfg.num_workers,
            pin_memory=cfg.pin_memory,
            persistent_workers=cfg.num_workers > 0,
            generator=gen,
        )

    def train_order(self) -> ResumableOrder:
        """The training order: rebuilt from (seed, epoch) alone, re-entered mid-epoch by a resumed
        run (article_gpt/data/resumable.py). One object per datamodule, for the resume to find."""
        if getattr(self, "_train_order", None) is None:
            inner = getattr(self, "train_sampler", None)
            inner = inner or EpochShuffle(len(self.train_set), self.seed, self.loader.shuffle)
            self._train_order = ResumableOrder(inner)
        return self._train_order

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)
