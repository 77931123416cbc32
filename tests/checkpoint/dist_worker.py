"""A training job of several processes that checkpoints with torchkeep's Checkpointer, as fit() does.

    python -m torch.distributed.run --standalone --nproc_per_node 2 dist_worker.py --out DIR \
        --uri DIR_OR_S3 [--uri ...] --steps 5 --save-at 3,5 [--resume [--from-step 3]] [--plain-copy DIR]
        [--restore-plain DIR] [--rank-1-endpoint URL]

Every rank builds the same toy model (seeded), shards it with FSDP2's `fully_shard`, and trains AdamW +
StepLR on a global batch of 12 rows a step, each rank taking every world_size-th row and adding a
little noise from its own RNG (so an exact resume needs every rank's RNG state; small enough that
other world sizes agree within float tolerance). Every save goes to every `--uri`; `--resume`
restores from the first. Rank 0 writes into `--out` (torch.save, tensors only):

    restored.pt               gathered weights and optimizer state right after the restore
    step-N.pt                 the same right after the save at step N
    final.pt                  at the end
    from-plain.pt             (`--restore-plain DIR`) the same of a fresh sharded model restored from DIR
    error-U-rank-R.txt        the error the save to the U-th uri raised on rank R; the job goes on

`--plain-copy DIR` then trains the final weights one more step as DDP does (DistributedDataParallel,
whole tensors on every rank) and saves the inner module to DIR/job from every rank; after the
process group is gone, rank 0 saves the very same objects from one process to DIR/single.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from torchkeep import Checkpointer, TorchkeepError

BATCH = 12


def build(strategy: str) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)  # the same initial weights on every rank
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    if strategy == "fsdp":
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, step: int) -> float:
    rank, world = dist.get_rank(), dist.get_world_size()
    data = torch.Generator().manual_seed(1000 + step)  # the global batch of this step
    x = torch.randn(BATCH, 8, generator=data)
    y = x.sum(dim=1, keepdim=True)
    x, y = x[rank::world], y[rank::world]
    x = x + 1e-6 * torch.randn_like(x)  # this rank's own RNG
    loss = nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()  # FSDP2 and DDP average the gradients over the ranks
    optimizer.step()
    scheduler.step()
    return loss.item()


def gathered(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Whole weights and optimizer state (collective), flat: `model.NAME`, `optimizer.NAME.exp_avg`."""
    model_state, optim_state = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    flat = {f"model.{k}": v.detach().clone() for k, v in model_state.items()}
    for name, values in optim_state["state"].items():
        flat.update({f"optimizer.{name}.{key}": torch.as_tensor(v).detach().clone() for key, v in values.items()})
    return flat


def save_everywhere(checkpointers: list[Checkpointer], out: Path, step: int, loss: float, **objects) -> None:
    for index, checkpointer in enumerate(checkpointers):
        try:
            checkpointer.save(step, epoch=0, metrics={"loss": loss}, **objects)
        except TorchkeepError as error:
            (out / f"error-{index}-rank-{dist.get_rank()}.txt").write_text(f"{type(error).__name__}: {error}")


def plain_copy(final: dict[str, torch.Tensor], target: Path, step: int) -> None:
    """DDP: whole weights on every rank, rank 0 alone writes; then the same from one process."""
    model, optimizer, scheduler = build("ddp")
    torch.manual_seed(200 + dist.get_rank())  # each rank's own RNG again
    model.load_state_dict({k.removeprefix("model."): v for k, v in final.items() if k.startswith("model.")})
    wrapped = DistributedDataParallel(model)
    loss = train_step(wrapped, optimizer, scheduler, step)
    objects = {"model": wrapped.module, "optimizer": optimizer, "scheduler": scheduler, "epoch": 1, "metrics": {"loss": loss}}
    with Checkpointer(str(target / "job")) as checkpointer:
        checkpointer.save(step, **objects)
    rank = dist.get_rank()
    dist.destroy_process_group()
    if rank == 0:
        with Checkpointer(str(target / "single")) as checkpointer:
            checkpointer.save(step, **objects)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", action="append", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--save-at", default="")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--from-step", type=int)
    parser.add_argument("--plain-copy")
    parser.add_argument("--restore-plain")
    parser.add_argument("--rank-1-endpoint", help="rank 1 reaches the S3 of the last --uri through this URL")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = Path(args.out)
    model, optimizer, scheduler = build("fsdp")
    torch.manual_seed(100 + rank)
    start = 0
    checkpointers = [Checkpointer(uri, keep_last=2) for uri in args.uri[:-1]]
    if args.rank_1_endpoint and rank == 1:  # the S3 client reads its endpoint when it is made
        os.environ.update(AWS_ENDPOINT_URL=args.rank_1_endpoint, AWS_MAX_ATTEMPTS="2")
    checkpointers.append(Checkpointer(args.uri[-1], keep_last=2))
    if args.resume:
        start = checkpointers[0].restore(model=model, optimizer=optimizer, scheduler=scheduler, step=args.from_step).step
        state = gathered(model, optimizer)
        if rank == 0:
            torch.save(state, out / "restored.pt")
    save_at = {int(s) for s in args.save_at.split(",") if s}
    for step in range(start + 1, args.steps + 1):
        loss = train_step(model, optimizer, scheduler, step)
        if step in save_at:
            save_everywhere(checkpointers, out, step, loss, model=model, optimizer=optimizer, scheduler=scheduler)
            state = gathered(model, optimizer)
            if rank == 0:
                torch.save(state, out / f"step-{step}.pt")
    final = gathered(model, optimizer)
    if rank == 0:
        torch.save(final, out / "final.pt")
    for checkpointer in checkpointers:
        checkpointer.close()
    if args.restore_plain:  # a plain (DDP) checkpoint into a fresh sharded model and its optimizer
        model, optimizer, scheduler = build("fsdp")
        Checkpointer(args.restore_plain).restore(model=model, optimizer=optimizer, scheduler=scheduler)
        state = gathered(model, optimizer)
        if rank == 0:
            torch.save(state, out / "from-plain.pt")
    if args.plain_copy:
        plain_copy(final, Path(args.plain_copy), args.steps + 1)
    else:
        dist.destroy_process_group()
    (out / f"done-rank-{rank}").write_text("")  # the launch's assertion lists these when it fails


if __name__ == "__main__":
    main()
    # Everything is written and the process group is destroyed. Skip the interpreter's teardown: there,
    # now and then, a gloo rank aborts ("terminate called without an active exception") after its work.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
