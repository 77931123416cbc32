"""Checks on a CUDA machine (not run in CI, which has no GPU): tables, images (in memory and streamed by
DataLoader workers with pinned memory), text (bag, cnn, gru), an own model and EMA train on cuda;
stopped and resumed runs end bit-identical to uninterrupted ones; a device the machine lacks is a
one-line error; digits and flights timed on cpu and cuda. Prints one [ok] / [FAIL] line per check.

Run: python bench/gpu_check.py   (from the repository root, torchkeep importable)
"""

import os
import sys
import tempfile
import time
import traceback

import torch
from safetensors.torch import load_file

import torchkeep

root = tempfile.mkdtemp()


def weights(run):
    return load_file(f"{run}/bundle/model.safetensors")


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def section(name, fn):
    started = time.perf_counter()
    try:
        out = fn()
        print(f"[ok] {name} ({time.perf_counter() - started:.1f} s): {out}", flush=True)
    except Exception:  # noqa: BLE001 (a failed check is reported and the next one runs)
        print(f"[FAIL] {name} ({time.perf_counter() - started:.1f} s)", flush=True)
        traceback.print_exc(limit=6)
        sys.stdout.flush()


def table_resume(deterministic):
    tag = "det" if deterministic else "nondet"
    kw = {"epochs": 2, "device": "cuda", "seed": 3, "quiet": True, "deterministic": deterministic}
    full = torchkeep.train(example="flights", run_dir=f"{root}/t-{tag}-full", **kw)
    torchkeep.train(example="flights", run_dir=f"{root}/t-{tag}-cut", stop_at_step=17, **kw)
    torchkeep.train(resume=f"{root}/t-{tag}-cut", quiet=True)
    return f"valid {full.valid}, resumed bit-identical: {same(weights(f'{root}/t-{tag}-full'), weights(f'{root}/t-{tag}-cut'))}"


def images():
    r = torchkeep.train(example="digits", epochs=3, device="cuda", quiet=True, run_dir=f"{root}/img", pool="flatten", ema_decay=0.99)
    p = torchkeep.load(f"{root}/img")
    return f"valid {r.valid}; loaded model on {next(p.model.parameters()).device}"


def images_det_resume():
    kw = {"epochs": 2, "device": "cuda", "seed": 1, "quiet": True, "deterministic": True}
    torchkeep.train(example="digits", run_dir=f"{root}/i-full", **kw)
    torchkeep.train(example="digits", run_dir=f"{root}/i-cut", stop_at_step=30, **kw)
    torchkeep.train(resume=f"{root}/i-cut", quiet=True)
    return f"resumed bit-identical: {same(weights(f'{root}/i-full'), weights(f'{root}/i-cut'))}"


def text(encoder, deterministic=False):
    r = torchkeep.train(example="reviews", device="cuda", quiet=True, run_dir=f"{root}/txt-{encoder}-{deterministic}",
                        text_encoder=encoder, deterministic=deterministic, epochs=2)
    return f"valid {r.valid}"


def own_model():
    from torch import nn
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 20, generator=g); y = (x[:, :3].sum(1) > 0).long()
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))
    r = torchkeep.fit(model, (x[:1600], y[:1600]), (x[1600:], y[1600:]), loss="cross_entropy", run_dir=f"{root}/own",
                      epochs=3, device="cuda", quiet=True)
    return f"valid {r.valid}"


def speed():
    out = []
    for dev in ("cpu", "cuda"):
        started = time.perf_counter()
        torchkeep.train(example="digits", epochs=10, device=dev, quiet=True, run_dir=f"{root}/speed-{dev}", threads=4)
        out.append(f"{dev} {time.perf_counter() - started:.1f} s")
    return "digits 10 epochs: " + ", ".join(out)




def streamed_images_resume():
    """Images over the memory budget: DataLoader workers, pin_memory (default with CUDA), exact resume."""
    import numpy as np
    from PIL import Image

    from torchkeep.data.builtin import get_example
    folder = f"{root}/photos"
    with np.load(get_example("digits").path) as arrays:
        for index, (image, label) in enumerate(zip(arrays["images"][:600], arrays["labels"][:600])):
            os.makedirs(f"{folder}/{label}", exist_ok=True)
            Image.fromarray(image).save(f"{folder}/{label}/{index:04d}.png")
    kw = {"epochs": 2, "device": "cuda", "seed": 2, "quiet": True, "image_memory_bytes": 1000, "batch_size": 32}
    full = torchkeep.train(folder, run_dir=f"{root}/s-full", **kw)
    torchkeep.train(folder, run_dir=f"{root}/s-cut", stop_at_step=20, **kw)
    torchkeep.train(resume=f"{root}/s-cut", quiet=True)
    return f"valid {full.valid}; resumed bit-identical: {same(weights(f'{root}/s-full'), weights(f'{root}/s-cut'))}"


def flights_speed():
    out = []
    for dev, batch in (("cpu", 1024), ("cuda", 1024), ("cuda", 8192)):
        started = time.perf_counter()
        r = torchkeep.train(example="flights", epochs=3, device=dev, quiet=True, run_dir=f"{root}/fs-{dev}-{batch}",
                            threads=8, batch_size=batch)
        out.append(f"{dev} batch {batch}: {time.perf_counter() - started:.1f} s, auc {r.valid['roc_auc']:.4f}")
    return "; ".join(out)


def serve_like_predict_on_cuda_model():
    import polars as pl

    from torchkeep.data.builtin import get_example
    frame = pl.read_parquet(get_example("flights").path).head(2000)
    p = torchkeep.load(f"{root}/t-det-full")
    a = p.predict(frame)
    return f"predicted {a.height} rows on {next(p.model.parameters()).device}"




def explicit_device_cli_and_ema_resume():
    import subprocess
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "torchkeep", "train", "--example", "flights", "--device", "cuda:0", "--epochs", "1",
                        "--run-dir", f"{root}/cli-cuda", "--quiet"], check=False, capture_output=True, text=True, env=env)
    bad = subprocess.run([sys.executable, "-m", "torchkeep", "train", "--example", "flights", "--device", "cuda:7",
                          "--run-dir", f"{root}/cli-cuda7"], check=False, capture_output=True, text=True, env=env)
    kw = {"epochs": 2, "device": "cuda", "seed": 4, "quiet": True, "ema_decay": 0.9, "deterministic": True}
    torchkeep.train(example="flights", run_dir=f"{root}/e-full", **kw)
    torchkeep.train(example="flights", run_dir=f"{root}/e-cut", stop_at_step=20, **kw)
    torchkeep.train(resume=f"{root}/e-cut", quiet=True)
    return (f"cli cuda:0 rc {r.returncode}; cuda:7 rc {bad.returncode}: {bad.stderr.strip()[:120]}; "
            f"ema resume bit-identical: {same(weights(f'{root}/e-full'), weights(f'{root}/e-cut'))}")


def predictions_on_cuda_match_cpu():
    """torchkeep.load(..., device="cuda") answers like the CPU copy (tables, images, text, own model)."""
    import numpy as np
    import polars as pl

    from torchkeep.data.builtin import get_example
    flights = pl.read_parquet(get_example("flights").path).head(3000)
    reviews = pl.read_parquet(get_example("reviews").path).head(500)
    with np.load(get_example("digits").path) as arrays:
        digits = torch.from_numpy(arrays["images"][:500, None].copy())
    out = []
    for run, data in ((f"{root}/t-det-full", flights), (f"{root}/txt-bag-False", reviews), (f"{root}/img", digits)):
        cpu, cuda = torchkeep.load(run), torchkeep.load(run, device="cuda")
        assert cuda.device.type == "cuda"
        if isinstance(data, torch.Tensor):
            a, b = cpu.predict_frame(data), cuda.predict_frame(data)
        else:
            a, b = cpu.predict(data), cuda.predict(data)
        columns = [c for c in a.columns if c.startswith("probability")]
        gap = max(float(np.abs(a[c].to_numpy() - b[c].to_numpy()).max()) for c in columns)
        out.append(f"{run.rsplit('/', 1)[1]} max prob diff {gap:.1e}, same labels {a['prediction'].equals(b['prediction'])}")
    own_cpu, own_cuda = torchkeep.load(f"{root}/own"), torchkeep.load(f"{root}/own", device="cuda")
    x = torch.randn(100, 20)
    out.append(f"own max diff {float((own_cpu.predict(x) - own_cuda.predict(x)).abs().max()):.1e}")
    return "; ".join(out)


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run this on a CUDA machine")
    print("torch", torch.__version__, torch.cuda.get_device_name(0), flush=True)
    section("table on cuda, resume (deterministic=True)", lambda: table_resume(True))
    section("table on cuda, resume (deterministic=False)", lambda: table_resume(False))
    section("images on cuda, pool flatten, ema 0.99", images)
    section("images on cuda, resume (deterministic=True)", images_det_resume)
    for enc in ("bag", "cnn", "gru"):
        section(f"text {enc} on cuda", lambda enc=enc: text(enc))
    section("text bag on cuda, deterministic=True", lambda: text("bag", True))
    section("own model torchkeep.fit on cuda", own_model)
    section("speed digits cpu vs cuda", speed)
    section("streamed images on cuda: workers, pin_memory, resume", streamed_images_resume)
    section("flights speed cpu vs cuda", flights_speed)
    section("predict with a model trained on cuda", serve_like_predict_on_cuda_model)
    section("load(device='cuda') predictions match the CPU's", predictions_on_cuda_match_cpu)
    section("explicit --device cuda:0, a GPU the machine lacks, EMA resume on cuda", explicit_device_cli_and_ema_resume)


if __name__ == "__main__":
    main()
