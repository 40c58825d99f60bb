"""A training order that a resumed run can re-enter mid-epoch, without a repeated or skipped batch.

Every epoch's order is a pure function of ``(seed, epoch)`` (``EpochShuffle`` here, or the random
windows of ``corpus.RandomWindowSampler``), so a fresh process can rebuild any epoch's order.
``ResumableOrder`` wraps that order: a checkpoint records how far into the epoch training got
(article_gpt/recovery/checkpoint_io.py), and on resume the first pass yields only the rest of
the epoch. Lightning's own mid-epoch restore counts batches but replays the loader from its
start, so without this the resumed epoch would train its first batches twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """``range(n)`` in an order drawn from ``(seed, epoch)`` alone (in order when ``shuffle`` is off)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class ResumableOrder(Sampler[int]):
    """``inner``'s order, of which the first pass after :meth:`resume_at` yields ``[start:stop]``.

    ``len`` stays the whole epoch's, so Lightning still counts the epoch's batches from 0 and
    ends it where the uninterrupted run did. ``stop`` is set when ``limit_train_batches`` ended
    the epoch before the order ran out. ``keep_length`` (DDP) yields the rest of the epoch
    first and then the part already trained, which is never reached: Lightning's distributed
    wrapper indexes the order by position over its whole length, each rank taking every
    ``world_size``-th position.
    """

    def __init__(self, inner: Sampler[int]) -> None:
        self.inner = inner
        self.epoch = 0
        self._window: tuple[int, int, int | None] | None = None  # (epoch, start, stop)
        self._keep_length = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def resume_at(self, epoch: int, start: int, stop: int | None = None, keep_length: bool = False) -> None:
        """The next pass is epoch ``epoch`` from index ``start`` (samples already trained on)."""
        self.set_epoch(epoch)
        self._window = (epoch, start, stop) if start or stop is not None else None
        self._keep_length = keep_length

    def __iter__(self) -> Iterator[int]:
        order = list(self.inner)
        window, self._window = self._window, None  # one pass only: the next epoch is whole again
        if window is not None and window[0] == self.epoch:
            order = order[window[1] :] + order[: window[1]] if self._keep_length else order[window[1] : window[2]]
        return iter(order)

    def __len__(self) -> int:
        return len(self.inner)
