"""The order samples are read in, and the torch DataLoader that reads them.

Training reads `global batches` of batch_size x grad_accum x world samples per optimizer step, cut from one seeded
permutation per epoch: micro-batch m of rank r takes its slice. The position is (epoch, step) and a batch is a pure
function of its key, so a resume restarts the loader at the next key and gets the same batches, with any number of
workers; and a run resumed on another world size with the same global batch reads the same samples per step.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..setup import DataError
from ..tasks import make_batch


@dataclasses.dataclass(frozen=True)
class BatchKey:
    split: int  # 0 train, 1 validation
    epoch: int
    step: int  # optimizer step within the epoch (validation: batch number)
    micro: int
    indices: np.ndarray
    valid: int  # how many leading samples count (validation pads ranks to the same number of batches)


class TrainOrder:
    """Which samples each micro-batch of each step reads; its state is (epoch, step) of the next step."""

    def __init__(self, count: int, batch_size: int, grad_accum: int, rank: int, world: int, seed: int,
                 source: str) -> None:
        self.count, self.batch_size, self.grad_accum = count, batch_size, grad_accum
        self.rank, self.world, self.seed = rank, world, seed
        self.global_batch = batch_size * grad_accum * world
        self.steps_per_epoch = count // self.global_batch
        if self.steps_per_epoch == 0:
            raise DataError(f"{source}: {count} training samples are too few for one step of {self.global_batch} "
                            f"(batch_size {batch_size} x grad_accum {grad_accum}"
                            f"{f' x {world} processes' if world > 1 else ''})")
        self.epoch, self.step = 0, 0

    def __iter__(self):
        epoch, step = self.epoch, self.step
        while True:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.count)
            for s in range(step, self.steps_per_epoch):
                for m in range(self.grad_accum):
                    start = s * self.global_batch + (m * self.world + self.rank) * self.batch_size
                    yield BatchKey(0, epoch, s, m, perm[start:start + self.batch_size], self.batch_size)
            epoch, step = epoch + 1, 0

    def advance(self) -> None:
        """One optimizer step done."""
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])


def eval_keys(count: int, limit: int, batch_size: int, rank: int, world: int) -> list:
    """The validation samples (all, or the first `limit`), shared out across ranks; every rank gets the same
    number of batches (collectives inside the model, as under FSDP, need that), padded with uncounted samples."""
    total = min(count, limit) if limit else count
    mine = np.arange(total)[rank::world]
    per_rank = -(-total // world)  # ceil
    batches = -(-per_rank // batch_size)
    keys = []
    for b in range(batches):
        indices = mine[b * batch_size:(b + 1) * batch_size]
        valid = len(indices)
        # every batch full-size (a model may fix its batch dim; compiled models keep one shape): the padding
        # repeats sample 0 and is not counted
        indices = np.concatenate([indices, np.zeros(batch_size - valid, dtype=indices.dtype)])
        keys.append(BatchKey(1, 0, b, 0, indices, valid))
    return keys


class Batches(Dataset):
    """A map-style dataset whose items are whole batches, addressed by BatchKey (so workers build batches)."""

    def __init__(self, setup, cfg, source, preprocess, rank: int) -> None:
        self.setup, self.cfg, self.source, self.preprocess, self.rank = setup, cfg, source, preprocess, rank

    def __len__(self) -> int:  # never used for sampling: the keys come from TrainOrder / eval_keys
        return self.source.count

    def __getitem__(self, key: BatchKey):
        seed = int(np.random.SeedSequence([self.cfg.seed, key.split, key.epoch, key.step, key.micro,
                                           self.rank]).generate_state(1)[0])
        try:
            inputs, labels = make_batch(self.setup, self.cfg, self.source, key.indices, key.split,
                                        self.preprocess, seed)
        except DataError as exc:  # passed on as text: a worker's exception would reach the user as a traceback
            return str(exc), None, None
        return inputs, labels, (key.epoch, key.step, key.micro, key.valid, key.indices)


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def make_loader(batches: Batches, keys, workers: int, pin: bool) -> DataLoader:
    # its own generator: creating an iterator otherwise draws a worker seed from torch's global stream (which
    # dropout uses), and a resumed run creates its iterator at another point of that stream
    return DataLoader(batches, sampler=keys, batch_size=None, num_workers=workers, pin_memory=pin,
                      generator=torch.Generator().manual_seed(0),
                      worker_init_fn=_worker_init if workers else None,
                      persistent_workers=False, prefetch_factor=2 if workers else None)
