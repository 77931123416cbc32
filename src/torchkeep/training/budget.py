"""The training budget of a table run, counted in optimizer steps and derived from the row count.

A fixed number of epochs is the wrong unit for tables: 3 epochs of batch 1024 are 3 optimizer steps
on a 1k-row table and 700 on a 250k-row one. So a table run without --epochs / --batch-size gets

    batch  = 2 ** round(log2(rows / 32)), clipped to [32, 1024]   (about 32 batches an epoch)
    steps  = TARGET_STEPS, but at most MAX_ROWS_SEEN / (batch x k)  (the time cap, in rows seen by the
                                                                  model's k ensemble members)
    epochs = ceil(steps / batches per epoch), at least MIN_EPOCHS

with validation about VALIDATIONS times a run (each epoch when epochs are few, else every
steps / VALIDATIONS steps); after PATIENCE validations without improvement the best weights come
back and the learning rate is annealed to zero over as many steps, then the run ends
(training/schedule.py), with the weights of its best validation. The learning-rate schedule is sized
by the run's steps, so it decays to its end whatever the table's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TARGET_STEPS = 4000
# The time cap, in rows x ensemble members: the 16-member ensemble sees up to 500k rows (about 10-60 s on
# 2 CPU cores for the tables of the suite up to 30k rows).
MAX_ROWS_SEEN = 8_000_000
MIN_BATCH, MAX_BATCH = 32, 1024
MIN_EPOCHS = 3
VALIDATIONS = 40
PATIENCE = 10  # validations: a quarter of a run without a better validation starts the final anneal
# A step of at most this many rows x members runs on one CPU thread: waking a second thread for such
# small matrices costs more than it saves, and far more on a busy machine (penguins, 247 rows, on a
# loaded 2-core machine: 14.6 s with one thread, 165 s with two).
ONE_THREAD_ROWS = 1024


@dataclass(frozen=True)
class Budget:
    batch_size: int
    epochs: int
    steps: int  # optimizer steps the epochs give
    valid_every_steps: int | None  # None: validate at each epoch end
    early_stopping_patience: int
    members: int = 1  # ensemble members sharing the time cap
    threads: int | None = None  # CPU threads: 1 for small steps, else None (torch's default, one per core)

    def describe(self, rows: int) -> str:
        cadence = (f"validation every {self.valid_every_steps} steps" if self.valid_every_steps
                   else "validation each epoch")
        threads = "; one CPU thread (small steps)" if self.threads == 1 else ""  # the rule's, not the user's
        return (f"budget: {self.steps:,} steps = {self.epochs} epoch(s) of {math.ceil(rows / self.batch_size)} batches"
                f" of {self.batch_size} ({rows:,} rows{f', {self.members} ensemble members' if self.members > 1 else ''});"
                f" {cadence}; after {self.early_stopping_patience} without improvement: best weights back, learning rate"
                f" annealed, stop; best weights kept{threads}")


def table_budget(rows: int, batch_size: int | None = None, members: int = 1, steps: int | None = None) -> Budget:
    """The rule in the module docstring, for `rows` training rows (and a batch size the user chose) and
    a model of `members` ensemble members (each costs about one MLP's time per row). `steps`: the user's
    number of optimizer steps instead of TARGET_STEPS and the time cap."""
    rows = max(rows, 1)
    batch = batch_size or min(MAX_BATCH, max(MIN_BATCH, 2 ** round(math.log2(max(rows / 32, 1)))))
    per_epoch = math.ceil(rows / batch)
    if steps:  # the user's steps, rounded up to whole epochs
        epochs = math.ceil(steps / per_epoch)
    else:
        epochs = max(MIN_EPOCHS, math.ceil(max(1, min(TARGET_STEPS, MAX_ROWS_SEEN // (batch * members))) / per_epoch))
    steps = epochs * per_epoch
    valid_every = math.ceil(steps / VALIDATIONS) if epochs > VALIDATIONS else None
    return Budget(batch_size=batch, epochs=epochs, steps=steps, valid_every_steps=valid_every,
                  early_stopping_patience=PATIENCE, members=members,
                  threads=1 if batch * members <= ONE_THREAD_ROWS else None)


# -- image runs ---------------------------------------------------------------------------------
# An image run's time grows with its images x pixels: at the same 30 epochs, the digits re-encoded as
# 28x28 JPEGs took 10x the CPU time of the 8x8 originals (71 s against 7 s on one thread) for no
# better accuracy. So an image run left to its defaults trains IMAGE_EPOCHS epochs, but at most
# IMAGE_PIXELS_SEEN / (training images x height x width), and at least MIN_EPOCHS.
IMAGE_EPOCHS = 30
IMAGE_PIXELS_SEEN = 12_000_000  # about 25 s of the default CNN on one CPU thread


def image_epochs(images: int, height: int, width: int) -> int:
    """The epochs of an image run without --epochs: the rule above."""
    return max(MIN_EPOCHS, min(IMAGE_EPOCHS, IMAGE_PIXELS_SEEN // max(1, images * height * width)))
