"""`EpochSampler`: prompt batches drawn without replacement, reshuffled each epoch, resumable."""

from __future__ import annotations

import random


class EpochSampler:
    """Yield batches of dataset indices; each epoch is a fresh permutation seeded by ``(seed, epoch)``.

    The state is two integers (epoch, offset), so a checkpoint restores the exact next batch. A tail
    shorter than ``batch_size`` is skipped (every batch has the same number of prompts).

    Parameters
    ----------
    size:
        Number of items in the dataset.
    batch_size:
        Indices per batch, at most ``size``.
    seed:
        Base seed of the per-epoch permutations.
    shuffle:
        ``False`` walks the dataset in order.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, shuffle: bool = True) -> None:
        if size < 1 or not 1 <= batch_size <= size:
            raise ValueError(f"batch_size={batch_size} must lie in [1, dataset size={size}]")
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.epoch, self.offset = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.size))
        if self.shuffle:
            random.Random(f"{self.seed}/{epoch}").shuffle(order)
        return order

    def next_batch(self) -> list[int]:
        """The next ``batch_size`` indices, moving to the next epoch when this one runs short."""
        if self.offset + self.batch_size > self.size:
            self.epoch, self.offset = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        batch = self._order[self.offset : self.offset + self.batch_size]
        self.offset += self.batch_size
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset, "size": self.size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if (state["size"], state["batch_size"]) != (self.size, self.batch_size):
            raise ValueError(
                f"sampler state is for size={state['size']}, batch_size={state['batch_size']}, but this run has "
                f"size={self.size}, batch_size={self.batch_size}; resume with the same data and train_batch_size"
            )
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._order = self._permutation(self.epoch)
