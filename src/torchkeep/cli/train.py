"""`torchkeep train`: train a model on a table (or the built-in example), or resume a run."""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """examples:
  torchkeep train                                    # the built-in flights example
  torchkeep train --data flights.csv --target late   # your own table
  torchkeep train --data s3://bucket/flights/ --target late   # a prefix of parquet files; streamed when large
  torchkeep train config.toml --epochs 5             # a TOML config, a flag overriding it
  torchkeep train --resume runs/flights-20261125-1200 # continue exactly where a run stopped
  torchkeep train --track tensorboard,wandb          # also log to TensorBoard and W&B (metrics.jsonl always)
  torchkeep train --data new.csv --target late --init-from runs/big --freeze 'embeddings.*' --unfreeze-at 3
  torchkeep train --example digits                   # built-in 8x8 digit images, small CNN
  torchkeep train --data photos/                     # images: one sub-folder per class
  torchkeep train --data labels.csv --image-dir imgs/ --image-size 64  # a CSV of file and label columns
  torchkeep train --data fashion-mnist/              # a folder of MNIST idx files (*-images-idx3-ubyte[.gz])
  torchkeep train --example reviews                  # text: Amazon fine-food reviews, great or not
  torchkeep train --data reviews.csv --target score --text-column review   # your own text column
  torchkeep train --nproc 2                          # two processes on this machine (DDP; torchrun underneath)
  torchkeep train --nproc 4 --strategy fsdp          # parameters sharded between the processes (FSDP2)
  torchkeep train --nnodes 2 --node-rank 0 --nproc 8 --rdzv-endpoint node0:29400 --run-dir s3://b/runs/r1

A TOML config maps one to one onto the settings: [data] path, target, task, valid_fraction,
categorical, continuous, drop, scaling, numeric_encoding, numeric_bins, min_level_count, stream, in_memory_bytes,
shuffle_buffer_bytes, stream_cache_bytes, skip_bad_files; [model] hidden_sizes,
ensemble_size, label_smoothing, dropout, batch_norm, embedding_dims;
[train] epochs, batch_size, seed, deterministic, grad_accum_steps, clip_grad_norm, early_stopping_patience,
monitor, valid_every_steps, valid_every_epoch, restore_best, anneal_on_stall, ema_decay, log_every_steps; [train.optim] optimizer, lr,
weight_decay, schedule; [train.transfer] init_from, freeze, unfreeze_at, backbone_lr_mult,
rename = {"old_prefix." = "new_prefix."}; [checkpoint] every_steps, keep_last, async;
[track] trackers = ["tensorboard", "wandb"]. Images: [data] image_dir, image_size, channels, file_column,
label_column, image_memory_bytes, skip_bad_images, augment_pad, augment_flip, and for images streamed
from files num_workers, pin_memory, persistent_workers, prefetch_factor; [vision] architecture
(cnn | mlp), widths, convs_per_block, pool, hidden_sizes, dropout. Image runs default to batch 64, lr 3e-3,
augment_pad 1, and epochs and cnn widths by the images' number and size (--epochs, --widths) unless set. Text: [data] text_columns, max_tokens, text_ngrams, min_freq,
max_vocab, char_ngrams, tokenizer; [model] text_encoder, text_embedding_dim, text_dropout,
text_weighting, embeddings, freeze_embeddings.
"""


def _names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "train", help="train a model (default: the built-in flights example)",
        description="Train a model on a CSV/Parquet table (categorical columns as entity embeddings, text"
        " columns through a vocabulary) or on images (class folders, a CSV + --image-dir, MNIST idx files);"
        " every run keeps checkpoints, metrics and a bundle for predict/serve in its run directory.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", metavar="CONFIG.toml", help="settings file; flags override it")
    data = p.add_argument_group("data")
    data.add_argument("--data", metavar="PATH", help="training table (.csv or .parquet), or a parquet dataset: a folder,"
                      " a glob ('data/*.parquet') or an s3://bucket/prefix/ of parquet files, key=value folders read as"
                      " columns (torchkeep[parquet]); default: --example flights")
    data.add_argument("--example", metavar="NAME", help="a built-in dataset (see `torchkeep datasets`)")
    data.add_argument("--target", metavar="COL", help="column to predict")
    data.add_argument("--task", choices=["binary", "multiclass", "regression"], help="default: inferred from the target")
    data.add_argument("--valid", metavar="PATH", dest="valid_path", help="validation table or parquet dataset (default: a"
                      " random split; of whole row groups when streamed)")
    data.add_argument("--valid-fraction", type=float, metavar="F", help="share of rows held out for validation (default 0.1)")
    data.add_argument("--categorical", action="append", metavar="COLS", help="force columns categorical (comma list)")
    data.add_argument("--continuous", action="append", metavar="COLS", help="force columns continuous (comma list)")
    data.add_argument("--drop", action="append", metavar="COLS", help="ignore columns (comma list). Dropped anyway,"
                      " with a warning each: constant and all-null columns, and string columns with a distinct value"
                      " in 90%% of rows (identifiers; --categorical COL keeps one); rows with a null target")
    data.add_argument("--scaling", choices=["robust", "standard"],
                      help="continuous columns: robust (default) = (x - median) / (IQR / 1.349), smoothly clipped to"
                      " +-3 by z / sqrt(1 + (z/3)^2), so outliers cannot dominate; standard = (x - mean) / std")
    data.add_argument("--numeric-encoding", choices=["ple", "periodic", "ple+periodic", "none"],
                      help="ple (default): each continuous column also gets piecewise-linear bins over its training"
                      " quantiles (Gorishniy et al. 2022), one input per bin, so the first layer can bend the column's"
                      " effect; periodic: the model embeds each scaled value as ReLU(linear(cos, sin of 8 learned"
                      " frequencies)), 8 numbers a column (the same paper's PLR); ple+periodic: both; none: the scaled value only")
    data.add_argument("--numeric-bins", type=int, metavar="N", help="ple bins per continuous column (default 16;"
                      " fewer where values repeat)")
    data.add_argument("--integer-levels-as-numbers", action=argparse.BooleanOptionalAction, default=None,
                      help="an integer column with at most 32 distinct values is categorical (an embedding per level);"
                      " with this it is also continuous (its scaled value and bins), so the order of its levels"
                      " counts too (hours, ordinal codes, small counts). Columns named by --categorical are left alone")
    data.add_argument("--min-level-count", type=int, metavar="N",
                      help="categorical levels seen fewer than N times in training share the index of null and"
                      " unseen values (default: in columns of more than 32 levels, 0.1%% of the training rows, at least 1:"
                      " a level needs 37 rows of 36,500 for a vector of its own, so at most ~1,000 levels a column;"
                      " columns of fewer levels keep them all. 1: every level its own)")
    stream = p.add_argument_group(
        "large tables (parquet datasets)", "A dataset that fits in --in-memory-gib is read whole, as one table. A larger"
        " one (or any, with --stream) is streamed: its row groups are split into training and validation, the schema"
        " is fitted in one pass (quantiles by a sketch, rank error < 0.05%), and training reads the row groups in a"
        " seeded order per epoch, a few ahead in threads, shuffled within --shuffle-buffer-mib; --resume continues at"
        " exactly the next batch.")
    stream.add_argument("--stream", action="store_true", default=None, help="stream the parquet data whatever its size")
    stream.add_argument("--in-memory-gib", type=float, metavar="G",
                        help="read a dataset whole while it and its tensors fit in this much memory, estimated"
                        " from the parquet footers (default: a quarter of this machine's memory)")
    stream.add_argument("--shuffle-buffer-mib", type=float, metavar="M",
                        help="decoded training rows shuffled together when streaming (default 256)")
    stream.add_argument("--stream-cache-gib", type=float, metavar="G",
                        help="decoded row groups kept on local disk (RUN_DIR/stream-cache/) so that epochs after the"
                        " first skip parquet decoding; past G, or when the disk is full, the rest are decoded every"
                        " epoch (default 16; 0: no cache)")
    stream.add_argument("--skip-bad-files", action="store_true", default=None,
                        help="leave out (and count) parquet files that cannot be read (default: stop, naming the first)")
    images = p.add_argument_group("images (--data DIR of class folders, an idx folder, or a CSV + --image-dir)")
    images.add_argument("--image-dir", metavar="DIR", help="folder the CSV's file names are relative to, local or s3://"
                        " (default: the CSV's folder)")
    images.add_argument("--file-column", metavar="COL", help="CSV column of file names (default: file/filename/path/image,"
                        " else the first column)")
    images.add_argument("--label-column", metavar="COL", help="CSV column of labels (default: label/class/target,"
                        " else the second column)")
    images.add_argument("--image-size", metavar="H[,W]", help="resize every image to this (default: the first image's size)")
    images.add_argument("--channels", type=int, choices=[1, 3], help="1 gray or 3 RGB (default: gray if the first image is)")
    images.add_argument("--skip-bad-images", action="store_true", default=None,
                        help="leave out and count unreadable images (default: stop naming the first one)")
    images.add_argument("--augment-pad", type=int, metavar="P", help="random crop after padding by P pixels (default 1; 0: off)")
    images.add_argument("--augment-flip", action="store_true", default=None, help="random horizontal flips (default off)")
    images.add_argument("--image-memory-gib", type=float, metavar="G",
                        help="decoded images must fit in this much memory (default 2)")
    images.add_argument("--architecture", choices=["cnn", "mlp"], help="image model (default cnn)")
    images.add_argument("--widths", metavar="N,N", help="cnn channels per block, each block halves H and W (default by image size: a block per halving"
                        " of the shorter side down to 4 pixels, at least 2, widths doubling from 32 to at most 256:"
                        " 8x8 and 16x16 32,64; 28x28 and 32x32 32,64,128; 64x64 32,64,128,256)")
    images.add_argument("--pool", choices=["avg", "flatten"],
                        help="what the cnn's head sees: avg (default), global average pooling, one value per channel;"
                             " flatten, the whole last feature map, where things are in the image (keeps much more"
                             " for new classes on a frozen backbone)")
    text = p.add_argument_group(
        "text columns", "Lower-cased, split into Unicode words, punctuation dropped; a vocabulary fitted on the"
        " training split. A run with text columns defaults to 5 epochs, batch 64, lr 1e-3, MLP 32, sqrt pooling,"
        " the last epoch's weights and 2% of the rows held out for validation (5-fold CV on small_fine_foods' training"
        " reviews: ROC AUC 0.8695 against 0.8624 before and 0.8652 for TF-IDF + logistic regression; README ## Text).")
    text.add_argument("--text-column", action="append", metavar="COLS", dest="text_columns",
                      help="train these columns as text (comma list or repeated); `--example reviews` sets 'review'")
    text.add_argument("--max-tokens", type=int, metavar="N", help="token ids kept per text, the rest cut (default 1024)")
    text.add_argument("--text-ngrams", type=int, choices=[1, 2], metavar="N",
                      help="1: words; 2: words and word pairs, fastText style (default 2 for bag, 1 for cnn/gru)")
    text.add_argument("--min-freq", type=int, metavar="N", help="times a token is seen in training to enter the vocabulary (default 2)")
    text.add_argument("--char-ngrams", type=int, metavar="N",
                      help="words not in the vocabulary become their known character N-grams, fastText style (default 0: off)")
    text.add_argument("--tokenizer", metavar="FILE",
                      help="a Hugging Face tokenizers file (tokenizer.json) splits the texts instead; its tokens"
                      " feed the vocabulary, its JSON is kept in the run (needs torchkeep[text])")
    text.add_argument("--max-vocab", type=int, metavar="N", help="vocabulary size cap, most frequent first (default 100000)")
    text.add_argument("--text-encoder", choices=["bag", "cnn", "gru"],
                      help="bag: mean of token vectors (EmbeddingBag, default, fastest); cnn: 1D convolution; gru")
    text.add_argument("--text-embedding-dim", type=int, metavar="N", help="size of a token vector (default 64)")
    text.add_argument("--text-weighting", choices=["sqrt", "mean", "idf"],
                      help="bag encoder: sum of token vectors over sqrt(tokens) (default), their mean, or IDF-weighted")
    text.add_argument("--text-dropout", type=float, metavar="P", help="dropout on the text vectors (default 0)")
    text.add_argument("--embeddings", metavar="FILE", help="pretrained word vectors, word2vec/GloVe text format (default none)")
    text.add_argument("--freeze-embeddings", action="store_true", default=None,
                      help="keep the --embeddings vectors fixed while training (default: fine-tune them)")
    model = p.add_argument_group("model")
    model.add_argument("--hidden-sizes", metavar="N,N", help="MLP widths (default 128,64; image mlp 512,512)")
    model.add_argument("--dropout", type=float, metavar="P", help="default 0 (image models 0.1)")
    model.add_argument("--ensemble-size", type=int, metavar="K",
                       help="tables: train K MLPs at once as one BatchEnsemble (TabM): shared weights, per-member"
                       " scalings, biases and heads, one loss each; predictions are their mean (default 16; 1: one MLP)")
    model.add_argument("--label-smoothing", type=float, metavar="E",
                       help="classification: training targets moved E towards uniform (default 0)")
    training = p.add_argument_group("training")
    training.add_argument("--epochs", type=int, metavar="N",
                          help="tables: default from the step budget, about 4,000 optimizer steps (at most 8M rows x ensemble members"
                          " seen, at least 3 epochs), printed when the run starts; with many short epochs, validation"
                          " ~40 times a run, early stop after 10 without improvement, best weights kept; images: 30, but at"
                          " most 12M pixels seen (training images x H x W) and at least 3 (28x28 x 1,293 images: 11);"
                          " text 5. With --resume RUN: train a run further")
    training.add_argument("--steps", type=int, metavar="N",
                          help="tables: train about N optimizer steps (rounded up to whole epochs) instead of the"
                          " budget's 4,000, with the budget's batch size, validation cadence and early stopping;"
                          " no time cap. With --resume RUN: train the run further to N steps")
    training.add_argument("--batch-size", type=int, metavar="N",
                          help="tables: default 2**round(log2(rows / 32)) within 32-1024, about 32 batches an epoch"
                          " (images 64, text 64)")
    training.add_argument("--lr", type=float, metavar="X", help="peak learning rate (default 3e-3; text 1e-3; one-cycle)")
    training.add_argument("--optimizer", choices=["adamw", "adam", "sgd"])
    training.add_argument("--schedule", choices=["onecycle", "constant", "cosine"])
    training.add_argument("--weight-decay", type=float, metavar="X")
    training.add_argument("--grad-accum-steps", type=int, metavar="N")
    training.add_argument("--clip-grad-norm", type=float, metavar="X")
    training.add_argument("--early-stopping-patience", type=int, metavar="N", help="validations without improvement")
    training.add_argument("--anneal-on-stall", action=argparse.BooleanOptionalAction, default=None,
                          help="at the first early stop: restore the best weights, anneal the learning rate to 0 over"
                          " as many steps as the stall took, keep the best of all (default on for tables' step budget)")
    training.add_argument("--monitor", metavar="METRIC", help="metric for early stopping and best weights (default per task)")
    training.add_argument("--valid-every-steps", type=int, metavar="N")
    training.add_argument("--seed", type=int, metavar="N")
    training.add_argument("--deterministic", action="store_true", default=None, help="deterministic algorithms only")
    training.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda, cuda:1, mps")
    training.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: one per core)")
    training.add_argument("--ema-decay", type=float, metavar="D",
                          help="also keep an exponential moving average of the weights, updated after every optimizer"
                          " step (average = D x average + (1 - D) x weights): about the last 1/(1-D) steps are"
                          " averaged, which smooths the noise of the final steps. Validation, the best-epoch pick,"
                          " the bundle and exports use the average; the training loss is the raw model's. Typical"
                          " 0.99-0.9999: choose D so that 1/(1-D) is well below the run's optimizer steps"
                          " (default: off)")
    transfer = p.add_argument_group(
        "transfer learning", "start from another model's weights; only when a run starts (--resume keeps its checkpoint)")
    transfer.add_argument("--init-from", metavar="SOURCE",
                          help="copy every weight whose name and shape match from a torchkeep run (its bundle, else its"
                          " newest valid checkpoint), a bundle, a .safetensors file or a .pth/.pt state_dict (read"
                          " weights-only: no pickled code runs); local or s3://. Prints what was loaded, skipped"
                          " (shape differs) and newly initialised (default: none, random init)")
    transfer.add_argument("--freeze", action="append", metavar="PATTERNS",
                          help="keep parameters fixed whose names match a glob, comma list or repeated, e.g."
                          " 'embeddings.*'; no gradients, not in the optimizer, their BatchNorm in eval mode"
                          " (default: nothing frozen; `torchkeep inspect RUN` lists the names)")
    transfer.add_argument("--unfreeze-at", type=int, metavar="EPOCH",
                          help="1-based epoch from which frozen parameters train too: 3 = frozen in epochs 1-2"
                          " (default: frozen to the end)")
    transfer.add_argument("--backbone-lr-mult", type=float, metavar="X",
                          help="learning rate of the weights loaded by --init-from = lr x X, e.g. 0.1 (default 1.0)")
    runs = p.add_argument_group("run directory and checkpoints")
    runs.add_argument("--run-dir", metavar="DIR", help="default: runs/<data>-<time>")
    runs.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                      help="continue a run from its newest valid checkpoint (RUN_DIR or --run-dir), after a crash"
                      " or to train a finished run further with --epochs N (more than it has trained): the"
                      " learning-rate schedule is rebuilt for N epochs and continues from the step reached, so a"
                      " constant schedule gives exactly the run that N epochs from the start would have given;"
                      " one-cycle and cosine go on at the rate their N-epoch schedule has there. Other settings"
                      " cannot change on resume")
    runs.add_argument("--checkpoint-every-steps", type=int, metavar="N", dest="every_steps",
                      help="also checkpoint every N optimizer steps (always at each epoch end)")
    runs.add_argument("--keep-last", type=int, metavar="K", help="checkpoints kept (default 3, plus the best)")
    runs.add_argument("--sync-checkpoints", action="store_const", const=False, dest="async_save",
                      help="write checkpoints in the training thread")
    tracking = p.add_argument_group("tracking")
    tracking.add_argument("--track", action="append", metavar="NAMES",
                          help="trackers, comma list: tensorboard (RUN_DIR/tensorboard; torchkeep[track]), wandb"
                          " (torchkeep[wandb]; WANDB_MODE=offline needs no account), jsonl (always on)")
    tracking.add_argument("--log-every-steps", type=int, metavar="N", help="log training loss, lr, rows/s every N"
                          " optimizer steps (default 50); validation is logged each time it runs")
    processes = p.add_argument_group(
        "more than one process", "Workers started by torch's elastic launcher (torch.distributed.run), the same as"
        " `torchrun --nproc-per-node N -m torchkeep train ...`; gloo on CPU, nccl on CUDA (one GPU per process); CPU"
        " threads split between a machine's processes. Rank 0 writes the run; each rank logs to RUN_DIR/logs/")
    processes.add_argument("--nproc", type=int, default=1, metavar="N", help="worker processes on this machine (default 1:"
                           " one process, no launcher)")
    processes.add_argument("--strategy", choices=["ddp", "fsdp"], help="ddp (default): a whole model per process,"
                           " gradients averaged; fsdp: FSDP2 fully_shard, parameters and optimizer state split")
    processes.add_argument("--nnodes", type=int, default=1, metavar="N", help="machines in the job (default 1)")
    processes.add_argument("--node-rank", type=int, default=0, metavar="K", help="this machine's index, 0 to N-1")
    processes.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="where the machines meet (c10d rendezvous):"
                           " a free port on one of them; needed with --nnodes > 1. The run directory must be"
                           " reachable from every machine (s3:// or a shared file system)")
    processes.add_argument("--max-restarts", type=int, default=0, metavar="K", help="after a worker fails, start all"
                           " workers again up to K times; they resume from the last committed checkpoint (needs"
                           " --run-dir; default 0: the run stops)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


LAUNCH_FLAGS = ("--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint", "--max-restarts")


def worker_args(argv: list[str]) -> list[str]:
    """The command as typed, less the launcher's own flags: what every worker runs."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCH_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in LAUNCH_FLAGS)):
            kept.append(arg)
    return kept


def launch(args: argparse.Namespace) -> bool:
    """Start the workers when more than one process is asked for (and this is not one of them); True then."""
    from torchkeep import distributed
    from torchkeep.errors import ConfigError

    settings = distributed.Launch(nproc=args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
                                  rdzv_endpoint=args.rdzv_endpoint, max_restarts=args.max_restarts)
    if not settings.needed or distributed.in_launched_worker():
        return False
    if settings.max_restarts and not (args.run_dir or isinstance(args.resume, str)):
        raise ConfigError("--max-restarts starts the workers again, and they resume the run in --run-dir: name one"
                          " (--run-dir DIR)")
    distributed.launch_command(settings, worker_args(args.argv))
    return True


OVERRIDES = ("data", "example", "task", "valid_path", "valid_fraction", "dropout", "epochs", "batch_size", "lr",
             "optimizer", "schedule", "weight_decay", "grad_accum_steps", "clip_grad_norm", "early_stopping_patience",
             "monitor", "valid_every_steps", "seed", "deterministic", "device", "threads", "run_dir", "every_steps", "keep_last",
             "async_save", "log_every_steps", "init_from", "unfreeze_at", "backbone_lr_mult", "image_dir", "file_column",
             "label_column", "channels", "skip_bad_images", "augment_pad", "augment_flip", "architecture", "max_tokens",
             "text_ngrams", "min_freq", "max_vocab", "text_encoder", "text_embedding_dim", "text_dropout", "embeddings",
             "freeze_embeddings", "char_ngrams", "tokenizer", "text_weighting", "ema_decay", "pool", "scaling",
             "numeric_encoding", "numeric_bins", "ensemble_size", "label_smoothing", "min_level_count", "anneal_on_stall",
             "integer_levels_as_numbers",
             "stream", "skip_bad_files", "strategy")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags give, as keyword overrides of the config (`torchkeep tune` takes them too)."""
    from torchkeep.errors import ConfigError

    overrides: dict[str, Any] = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
    overrides["path"] = overrides.pop("data", None)
    for key in ("categorical", "continuous", "drop", "text_columns"):
        if (names := _names(getattr(args, key))) is not None:
            overrides[key] = names
    if (freeze := _names(args.freeze)) is not None:
        overrides["freeze"] = freeze
    if (trackers := _names(args.track)) is not None:
        overrides["trackers"] = trackers
    if args.hidden_sizes:
        try:
            overrides["hidden_sizes"] = [int(v) for v in args.hidden_sizes.split(",")]
        except ValueError:
            raise ConfigError(f"--hidden-sizes must be integers separated by commas (got {args.hidden_sizes!r})") from None
    for flag, key in (("image_size", "image_size"), ("widths", "widths")):
        if getattr(args, flag):
            try:
                overrides[key] = [int(v) for v in getattr(args, flag).split(",")]
            except ValueError:
                raise ConfigError(f"--{flag.replace('_', '-')} must be integers separated by commas"
                                  f" (got {getattr(args, flag)!r})") from None
    if args.image_memory_gib is not None:
        overrides["image_memory_bytes"] = int(args.image_memory_gib * 2**30)
    if args.in_memory_gib is not None:
        overrides["in_memory_bytes"] = max(1, int(args.in_memory_gib * 2**30))
    if args.shuffle_buffer_mib is not None:
        overrides["shuffle_buffer_bytes"] = max(1, int(args.shuffle_buffer_mib * 2**20))
    if args.stream_cache_gib is not None:
        overrides["stream_cache_bytes"] = max(0, int(args.stream_cache_gib * 2**30))
    return {k: v for k, v in overrides.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    if launch(args):  # the workers ran the command; rank 0 printed the run's result
        return 0
    import torchkeep
    from torchkeep import distributed
    from torchkeep.config import RunConfig, load_toml
    from torchkeep.errors import ConfigError

    overrides = settings(args)
    if args.resume:
        run_dir = args.resume if isinstance(args.resume, str) else overrides.pop("run_dir", None)
        overrides.pop("run_dir", None)
        if run_dir is None:
            raise ConfigError("--resume needs the run directory: --resume RUN_DIR")
        extend = {"epochs": overrides.pop("epochs")} if "epochs" in overrides else {}
        if overrides or args.config or args.target:
            fixed = ", ".join("--" + k.replace("_", "-") for k in [*overrides, *(["target"] if args.target else [])])
            raise ConfigError("--resume continues a run with its saved settings; only --epochs or --steps can change"
                              f" (to train it further), not {fixed or 'a CONFIG file'}")
        result = torchkeep.train(resume=run_dir, quiet=args.quiet, steps=args.steps, **extend)
    else:
        config = load_toml(args.config) if args.config else RunConfig()
        result = torchkeep.train(config=config, target=args.target, quiet=args.quiet, steps=args.steps, **overrides)
    from torchkeep.training.metrics import for_display

    main = distributed.is_main()
    distributed.teardown()
    if not main:
        return 0

    metrics = "  ".join(f"{k} {v:.4f}" for k, v in for_display(result.valid).items())
    print(f"run: {result.run_dir}")
    print(f"validation: {metrics}")
    print(f"bundle: {result.bundle}")
    print(f"next: torchkeep evaluate {result.run_dir} --data PATH | torchkeep predict {result.run_dir} --data PATH --out preds.csv")
    return 0
