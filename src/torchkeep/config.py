"""RunConfig: every setting of a run, composed from each component's own config dataclass.

A TOML file maps one to one onto it ([data], [model], [train], [train.optim], [train.transfer],
[checkpoint], [track], [vision]; [tune] belongs to `torchkeep tune`); CLI flags override the file; the
resolved config is saved in the run directory as config.json.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from typing import Any

from torchkeep.errors import ConfigError
from torchkeep.models.tabular import TabularModelConfig
from torchkeep.models.vision import VisionModelConfig
from torchkeep.track.build import TrackConfig
from torchkeep.training.loop import TrainConfig
from torchkeep.training.optim import OptimConfig
from torchkeep.training.transfer import TransferConfig


@dataclass(kw_only=True)
class DataConfig:
    path: str | None = None  # CSV or Parquet; None: the built-in `example`
    example: str | None = None  # a built-in dataset (`torchkeep datasets`); default "flights"
    target: str | None = None
    task: str | None = None  # binary | multiclass | regression; None: inferred from the target
    valid_path: str | None = None
    valid_fraction: float = 0.1  # of the rows, when there is no valid_path
    categorical: list[str] = field(default_factory=list)
    continuous: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    max_integer_levels: int = 32  # integer columns with at most this many values are categorical
    # ... and, with this, continuous as well (an embedding per level and the number, so their order counts)
    integer_levels_as_numbers: bool = False
    # Continuous columns: "robust" (median / IQR, smoothly clipped to +-3) or "standard" (mean / std)
    # scaling, and "ple" (the scaled value plus `numeric_bins` piecewise-linear quantile bins), "periodic"
    # (the model's periodic embeddings of the scaled value), "ple+periodic" or "none".
    scaling: str = "robust"
    numeric_encoding: str = "ple"
    numeric_bins: int = 16
    # Categorical levels seen fewer times than this in training share index 0 with nulls and unseen levels.
    # None: at least 0.1% of the training rows (data/table_spec.py MIN_LEVEL_SHARE), and at least 1
    min_level_count: int | None = None
    standardize_target: bool = True  # regression only
    # Parquet datasets (`path` a folder, a glob or an s3:// prefix of parquet files): read whole while their
    # size in memory (estimated from the footers) is at most `in_memory_bytes` (None: a quarter of this
    # machine's memory), else, or with `stream`, streamed row group by row group (data/stream.py), with
    # `shuffle_buffer_bytes` of decoded rows shuffled together; up to `stream_cache_bytes` of decoded row groups
    # kept on local disk (RUN_DIR/stream-cache/) for later epochs, 0: none. `skip_bad_files`: leave out (and count)
    # files that cannot be read instead of stopping.
    stream: bool = False
    in_memory_bytes: int | None = None
    shuffle_buffer_bytes: int = 256 << 20
    stream_cache_bytes: int = 16 << 30
    skip_bad_files: bool = False
    # images (`path` a folder of class sub-folders, an idx folder, or a CSV of files and labels)
    image_dir: str | None = None  # where the CSV's file names point (default: the CSV's folder)
    file_column: str | None = None  # CSV column of file names (default: file/filename/path/image, else the first)
    label_column: str | None = None  # CSV column of labels (default: label/class/target, else the second)
    image_size: list[int] | None = None  # [height, width] (or [side]) images are resized to; None: the first image's
    channels: int | None = None  # 1 (gray) or 3 (RGB); None: gray when the first image is gray, else RGB
    image_memory_bytes: int = 2 << 30  # decoded images must fit this in memory (uint8 C*H*W per image)
    skip_bad_images: bool = False  # leave out (and count) unreadable images instead of stopping
    augment_pad: int = 0  # training batches: random crop after zero padding by this many pixels (image runs: 1)
    augment_flip: bool = False  # training batches: random horizontal flip (not for digits or text)
    # Images over image_memory_bytes are streamed from their files by DataLoader workers (torchdata's
    # StatefulDataLoader: exact mid-epoch resume). None: chosen for the machine (workers: 0 on <= 2
    # cores, where they compete with training threads, else min(4, cores // 2); pin_memory with CUDA;
    # persistent workers when there are workers; prefetch_factor 2).
    num_workers: int | None = None
    pin_memory: bool | None = None
    persistent_workers: bool | None = None
    prefetch_factor: int | None = None
    # Text columns (data/text.py): tokenized, a vocabulary fitted on the training split.
    text_columns: list[str] = field(default_factory=list)
    max_tokens: int = 1024  # token ids kept per text (words, plus word pairs with text_ngrams = 2)
    text_ngrams: int | None = None  # 1: words, 2: words and word pairs; None: 2 for the bag encoder, else 1
    min_freq: int = 2  # a token enters the vocabulary when seen this often in the training split
    max_vocab: int | None = 100_000
    char_ngrams: int = 0  # n > 0: words not in the vocabulary become their known character n-grams
    tokenizer: str | None = None  # a Hugging Face tokenizers file (tokenizer.json) instead of lower-case + \w+

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ConfigError(f"data.max_tokens must be >= 1 (got {self.max_tokens})")
        if not 0 <= self.char_ngrams <= 10:
            raise ConfigError(f"data.char_ngrams must be 0 (off) or a length up to 10 (got {self.char_ngrams})")
        if self.text_ngrams not in (None, 1, 2):
            raise ConfigError(f"data.text_ngrams must be 1 or 2 (got {self.text_ngrams})")
        if self.min_freq < 1 or (self.max_vocab is not None and self.max_vocab < 1):
            raise ConfigError(f"data.min_freq and data.max_vocab must be >= 1 (got {self.min_freq}, {self.max_vocab})")
        if not 0 < self.valid_fraction < 1:
            raise ConfigError(f"data.valid_fraction must be in (0, 1) (got {self.valid_fraction})")
        if self.task not in (None, "binary", "multiclass", "regression"):
            raise ConfigError(f"data.task must be binary, multiclass or regression (got {self.task!r})")
        if (self.in_memory_bytes is not None and self.in_memory_bytes < 1) or self.shuffle_buffer_bytes < 1:
            raise ConfigError(f"data.in_memory_bytes and data.shuffle_buffer_bytes must be > 0 (got"
                              f" {self.in_memory_bytes}, {self.shuffle_buffer_bytes})")
        if self.stream_cache_bytes < 0:
            raise ConfigError(f"data.stream_cache_bytes must be >= 0 (got {self.stream_cache_bytes})")
        if self.scaling not in ("robust", "standard"):
            raise ConfigError(f"data.scaling must be robust or standard (got {self.scaling!r})")
        if self.numeric_encoding not in ("ple", "periodic", "ple+periodic", "none"):
            raise ConfigError(f"data.numeric_encoding must be ple, periodic, ple+periodic or none (got {self.numeric_encoding!r})")
        if not 2 <= self.numeric_bins <= 256:
            raise ConfigError(f"data.numeric_bins must be from 2 to 256 (got {self.numeric_bins})")
        if self.min_level_count is not None and self.min_level_count < 1:
            raise ConfigError(f"data.min_level_count must be >= 1 (got {self.min_level_count})")
        if self.max_integer_levels < 0:
            raise ConfigError(f"data.max_integer_levels must be >= 0 (got {self.max_integer_levels})")
        if self.image_size is not None and (len(self.image_size) not in (1, 2) or min(self.image_size) < 1):
            raise ConfigError(f"data.image_size must be [height, width] or [side] of positive sizes (got {self.image_size})")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"data.channels must be 1 (gray) or 3 (RGB) (got {self.channels})")
        if self.image_memory_bytes < 1 or self.augment_pad < 0:
            raise ConfigError("data.image_memory_bytes must be > 0 and data.augment_pad >= 0")


@dataclass(kw_only=True)
class CheckpointConfig:
    every_steps: int | None = None
    every_epoch: bool = True
    keep_last: int = 3
    keep_best: bool = True  # also keep the checkpoint with the best monitored validation metric
    async_save: bool = True  # TOML key: `async`

    def __post_init__(self) -> None:
        if self.every_steps is not None and self.every_steps < 1:
            raise ConfigError(f"checkpoint.every_steps must be > 0 (got {self.every_steps})")
        if self.keep_last < 1:
            raise ConfigError(f"checkpoint.keep_last must be >= 1 (got {self.keep_last})")


@dataclass(kw_only=True)
class RunConfig:
    run_dir: str | None = None  # None: runs/<data name>-<time>
    data: DataConfig = field(default_factory=DataConfig)
    model: TabularModelConfig = field(default_factory=TabularModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    vision: VisionModelConfig = field(default_factory=VisionModelConfig)  # image runs' model
    # Setting names a TOML file gave (load_toml), so image and text runs replace only the defaults nobody
    # set, even where a file set one to the table default's value. Not saved: a saved config is resolved.
    explicit: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("explicit")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        return _build(cls, data, source)


_ALIASES = {"async": "async_save"}


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table of settings (got {type(data).__name__})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    nested = {"data": DataConfig, "model": TabularModelConfig, "train": TrainConfig,
              "checkpoint": CheckpointConfig, "optim": OptimConfig, "track": TrackConfig, "transfer": TransferConfig,
              "vision": VisionModelConfig}
    kwargs = {}
    for key, value in data.items():
        name = _ALIASES.get(key, key)
        if name not in fields or name == "explicit":
            raise ConfigError(f"{where}: unknown setting '{key}' (known: {', '.join(sorted(fields))})")
        if name in nested and dataclasses.is_dataclass(nested[name]) and isinstance(value, dict):
            value = _build(nested[name], value, f"{where}.{key}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from error


def load_toml(path: str) -> RunConfig:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    data.pop("tune", None)  # [tune]: a study's search (torchkeep tune); a run of the same file ignores it
    return dataclasses.replace(RunConfig.from_dict(data, source=path), explicit=frozenset(_setting_names(data)))


def _setting_names(table: dict[str, Any]) -> set[str]:
    """The leaf setting names of a TOML table ([train.optim] lr -> "lr"), as flags and keywords name them."""
    names: set[str] = set()
    for key, value in table.items():
        if isinstance(value, dict) and key != "rename":  # a section; [train.transfer] rename is a setting
            names |= _setting_names(value)
        else:
            names.add(_ALIASES.get(key, key))
    return names
