"""Training-step stall caused by a checkpoint: torchkeep's async save against its sync save.

A training loop (an MLP of four Linear layers, 2048 x W and W x 2048, W = 1536 by default: 12.6 M
parameters, 50 MB, so 151 MB of state with the AdamW moments; batch 16 of fixed random inputs) times
every step (zero_grad, forward, backward, optimizer.step, and, on a checkpoint step, the
`Checkpointer.save(step, model=, optimizer=)` call). Modes, interleaved round by round on the same
model and optimizer:
  none        no checkpoints: the step-time distribution without any
  async       Checkpointer(dir, keep_last=2, async_save=True): save() snapshots (copies) the state; a
              background thread writes it while training goes on (one save in flight at most)
  sync        Checkpointer(dir, keep_last=2, async_save=False): save() writes the checkpoint before it returns
Each on local disk (a temp dir, a checkpoint every --every steps) and, unless --no-s3, on S3
(moto's server in its own process on 127.0.0.1, started as bench/checkpoint.py does; a checkpoint
every --s3-every steps, so that a background upload at moto's ~75 MB/s can finish before the next
save; a save that finds the previous one unfinished waits for it, and that wait is stall).

Reported per mode (medians over all saves):
  stall        time of the step that saves minus the median of the 3 steps just before it in the same
               run (a local reference: this machine's load drifts between runs, which a reference
               from another run would count as stall)
  save() call  the time inside Checkpointer.save() itself: what the checkpoint adds to that step,
               measured directly (the stall above is this plus the step's own noise)
  after-save   async only: the extra time of the steps up to the next save, summed, against the same
               reference (saves that have a next save after them); the background write competes for the 2 cores with torch's threads (and,
               for S3, with moto's server process, which on a real deployment runs elsewhere)
  moto CPU     S3 only: CPU seconds the moto server process spent per save (beyond its idle rate in
               the `none` run), i.e. what the local server takes from the training process's 2 cores
Target (issue 3): async stall <= 10% of the sync save time (the sync save() call).

Run: .venv/bin/python bench/stall.py [--rounds 2] [--saves 3] [--every 8] [--s3-every 12] [--width 1536]
     [--batch 16] [--no-s3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import environment, table, verdict  # noqa: E402

import torchkeep  # noqa: E402

REFERENCE_STEPS = 3


def build(width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2048, width), nn.ReLU(), nn.Linear(width, 2048), nn.ReLU(),
                          nn.Linear(2048, width), nn.ReLU(), nn.Linear(width, 2048))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def process_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(model, optimizer, batches, steps: int, every: int, checkpointer, start_step: int,
        server_pid: int | None) -> dict:
    """Time `steps` steps; save at the end of every `every`-th step when a checkpointer is given."""
    times, save_calls, save_steps = [], [], []
    server_start = process_cpu(server_pid) if server_pid else 0.0
    for i in range(steps):
        x = batches[i % len(batches)]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(x).square().mean()
        loss.backward()
        optimizer.step()
        if checkpointer is not None and i % every == every - 1:
            called = time.perf_counter()
            checkpointer.save(start_step + i, model=model, optimizer=optimizer)
            save_calls.append(time.perf_counter() - called)
            save_steps.append(i)
        times.append(time.perf_counter() - start)
    waited = 0.0
    if checkpointer is not None:
        started = time.perf_counter()
        checkpointer.close()  # the last async save finishes here (not part of any step)
        waited = time.perf_counter() - started
    return {"times": times, "save_calls": save_calls, "save_steps": save_steps, "final_wait": waited,
            "server_cpu": (process_cpu(server_pid) - server_start) if server_pid else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--saves", type=int, default=3, help="saves per mode per round")
    parser.add_argument("--every", type=int, default=8, help="steps between saves on local disk")
    parser.add_argument("--s3-every", type=int, default=12, help="steps between saves on S3")
    parser.add_argument("--width", type=int, default=1536, help="hidden width W (1536: 50 MB of parameters)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--no-s3", action="store_true", help="local disk only")
    parser.add_argument("--dir", default=None, help="parent of the temp dir for local checkpoints")
    args = parser.parse_args()
    if min(args.every, args.s3_every) <= REFERENCE_STEPS:
        parser.error(f"--every and --s3-every must exceed {REFERENCE_STEPS}")

    print(environment())
    model, optimizer = build(args.width)
    params = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(args.batch, 2048, generator=generator) for _ in range(4)]
    run(model, optimizer, batches, 3, args.every, None, 0, None)  # warm-up: allocates the Adam moments
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    state_bytes += sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                       if isinstance(v, torch.Tensor))
    print(f"model {params / 1e6:.1f} M parameters ({params * 4 / 1e6:.0f} MB), state with AdamW moments"
          f" {state_bytes / 1e6:.0f} MB; batch {args.batch}; a save every {args.every} steps on local disk"
          f"{'' if args.no_s3 else f', every {args.s3_every} on S3'}; {args.saves} saves per mode per round,"
          f" {args.rounds} rounds")

    root = tempfile.mkdtemp(prefix="torchkeep-bench-stall-", dir=args.dir)
    storages = {"local": lambda mode, r: str(Path(root) / f"{mode}-{r}")}
    moto = None
    server_pid = None
    if not args.no_s3:
        from checkpoint import BUCKET, MOTO_NOTE, s3_env, start_moto, stop

        moto, url = start_moto()
        server_pid = moto.pid
        os.environ.update({k: v for k, v in s3_env(url).items() if k.startswith("AWS_")})
        import boto3

        boto3.session.Session().client("s3").create_bucket(Bucket=BUCKET)
        storages["S3"] = lambda mode, r: f"s3://{BUCKET}/stall/{mode}-{r}"
        print(f"S3: moto server (separate process) at {url}. {MOTO_NOTE}")

    modes = [("none", None, None)] + [(f"{where} {kind}", where, kind == "async")
                                     for where in storages for kind in ("async", "sync")]
    every_of = {None: args.every, "local": args.every, "S3": args.s3_every}
    results: dict[str, list[dict]] = {name: [] for name, _, _ in modes}
    step_counter = 0
    started = time.perf_counter()
    try:
        for round_index in range(args.rounds):
            for name, where, async_save in modes:
                checkpointer = None
                if where is not None:
                    checkpointer = torchkeep.Checkpointer(storages[where](name.split()[1], round_index),
                                                          keep_last=2, async_save=async_save)
                every = every_of[where]
                steps = args.saves * every
                result = run(model, optimizer, batches, steps, every, checkpointer, step_counter, server_pid)
                step_counter += steps
                results[name].append(result)
                calls = result["save_calls"]
                print(f"  round {round_index + 1} {name:11s} median step {statistics.median(result['times']):.3f} s"
                      + (f", save() calls {', '.join(f'{c:.3f}' for c in calls)} s" if calls else "")
                      + (f", final wait {result['final_wait']:.2f} s" if where else ""), flush=True)
    finally:
        if moto is not None:
            stop(moto)
        shutil.rmtree(root, ignore_errors=True)

    none_runs = results["none"]
    server_per_step = (sum(r["server_cpu"] for r in none_runs) / sum(len(r["times"]) for r in none_runs)
                       if server_pid else 0.0)
    rows, summary = [], {}
    for name, where, async_save in modes:
        all_times = sorted(t for r in results[name] for t in r["times"])
        stalls, after, calls = [], [], []
        for r in results[name]:
            for i, call in zip(r["save_steps"], r["save_calls"]):
                reference = statistics.median(r["times"][i - REFERENCE_STEPS : i])
                stalls.append(r["times"][i] - reference)
                if i + every_of[where] <= len(r["times"]):  # the last save of a run has no steps after it
                    following = r["times"][i + 1 : i + every_of[where]]
                    after.append(sum(t - reference for t in following))
                calls.append(call)
        saves = len(calls)
        server_cpu = None
        if server_pid and saves and where == "S3":
            server_cpu = (sum(r["server_cpu"] for r in results[name]) - server_per_step * len(all_times)) / saves
        summary[name] = {"stall": statistics.median(stalls) if stalls else None,
                         "call": statistics.median(calls) if calls else None}
        rows.append([
            name, len(all_times), f"{statistics.median(all_times):.3f}", f"{all_times[int(0.9 * (len(all_times) - 1))]:.3f}",
            f"{summary[name]['stall']:.3f}" if stalls else "-",
            f"{summary[name]['call']:.3f}" if calls else "-",
            f"{statistics.median(after):.3f}" if after and async_save else "-",
            f"{server_cpu:.2f}" if server_cpu is not None else "-",
        ])
    print(f"\nStep times (s), {state_bytes / 1e6:.0f} MB state; medians over {args.rounds * args.saves} saves per mode;"
          f" stall = save step - median of the {REFERENCE_STEPS} steps before it")
    print(table(["mode", "steps", "median step", "p90 step", "stall", "save() call", "after-save (async)",
                 "moto CPU s/save"], rows))
    verdicts = []
    for where in storages:
        a, s = summary[f"{where} async"], summary[f"{where} sync"]
        verdicts.append([f"{where}: async stall <= 10% of the sync save time", verdict(a["stall"] <= 0.1 * s["call"]),
                         f"{a['stall']:.3f} s = {a['stall'] / s['call'] * 100:.1f}% of {s['call']:.3f} s"])
        verdicts.append([f"{where}: async save() call <= 10% of the sync save time", verdict(a["call"] <= 0.1 * s["call"]),
                         f"{a['call']:.3f} s = {a['call'] / s['call'] * 100:.1f}% of {s['call']:.3f} s"])
    print("\nTargets (issue 3)")
    print(table(["target", "result", "measured"], verdicts))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
