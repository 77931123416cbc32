"""The model a server answers with, and swapping in a new one without a failed request.

A `Loaded` is one generation: a predictor, the validator of its requests, where it came from. A request
is validated and queued with the generation current when it arrived and is answered by that one (the
batcher keeps generations in separate batches), so a swap never mixes schemas. `Models.reload` loads the
new source in a thread (the event loop keeps serving), has it answer a warm-up row, and only then makes
it current; a source that does not load or answer leaves the old model serving.

Reload sources: a bundle path, or a run directory, whose newest bundle or valid checkpoint is taken
(predict/load.py): reloading a run that is still training serves its newest checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from torchkeep.errors import TorchkeepError
from torchkeep.predict.load import load
from torchkeep.predict.own_model import TensorPredictor
from torchkeep.serve.batcher import Batcher
from torchkeep.serve.images import ImageRowValidator
from torchkeep.serve.own_model import TensorRequests
from torchkeep.serve.validate import RowValidator

log = logging.getLogger("torchkeep")


@dataclass
class Loaded:
    predictor: Any
    source: str
    generation: int
    max_rows: int
    strict: bool
    loaded_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.own = isinstance(self.predictor, TensorPredictor)  # a model of torchkeep.fit: JSON tensors
        if self.own:
            self.validator: Any = TensorRequests(self.predictor, max_rows=self.max_rows, strict=self.strict)
        elif getattr(self.predictor.schema, "kind", "table") == "image":  # base64 in JSON, or multipart files
            self.validator = ImageRowValidator(self.predictor.schema, max_rows=self.max_rows, strict=self.strict)
        else:
            self.validator = RowValidator(self.predictor.schema, max_rows=self.max_rows, strict=self.strict)

    def predict(self, rows: list[Any]) -> list[dict[str, Any] | None]:
        """Validated rows -> one JSON object per row (None where the model's output is not finite)."""
        if self.own:
            return self.validator.predict(rows)
        return self.predictor.predict_records(rows)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "generation": self.generation, "task": getattr(self.predictor, "task", None),
                "loaded_at": self.loaded_at}


class ReloadError(Exception):
    """A new source that could not replace the model (the old one keeps serving)."""


class Models:
    def __init__(self, first: Loaded, batcher: Batcher, *, device: str) -> None:
        self.current, self.batcher, self.device = first, batcher, device
        self.ready, self.reason = False, "starting"
        self.reloads = 0
        self._lock: asyncio.Lock | None = None

    async def warm_up(self) -> None:
        """The first model must answer before the server says it is ready."""
        try:
            await self.batcher.submit([self.current.validator.warmup_row()], self.current.predict)
            self.ready, self.reason = True, ""
        except Exception as error:  # the model's own failure: /readyz says why
            self.reason = f"warm-up prediction failed: {error}"
            log.error("model cannot answer: %s", error)

    async def reload(self, source: str | None = None) -> Loaded:
        """Load `source` (default: the current one again), warm it up, then answer new requests with it."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one reload at a time; a second waits and then loads on top
            source = source or self.current.source
            started = time.perf_counter()
            try:
                predictor = await asyncio.to_thread(load, source, device=self.device)
                model = Loaded(predictor, source, self.current.generation + 1, self.current.max_rows,
                               self.current.strict)
                await self.batcher.submit([model.validator.warmup_row()], model.predict)
            except TorchkeepError as error:
                raise ReloadError(str(error)) from None
            except Exception as error:  # a model that loads but cannot answer: say what, keep the old one
                raise ReloadError(f"{source}: the new model failed its warm-up prediction"
                                  f" ({type(error).__name__}: {str(error)[:200]})") from None
            self.current = model
            self.reloads += 1
            log.warning("reloaded: now serving %s (generation %d, %.2f s to load and warm up)", source,
                        model.generation, time.perf_counter() - started)
            return model
