"""The model as TorchScript for `Predictor.predict_records` (a served request, a few rows): the same aten
operations without Python's per-module overhead, which is most of a one-row call (on the flights example
about half: 8 ensemble members, 7 embeddings, ~60 small operations).

Used only where it is the same computation: on the CPU, with no TorchScript fuser that could regroup
floating-point work there, and with outputs equal bit for bit to the eager model's on its first calls
(TorchScript's profiling executor settles its graph in those); anything else, a model TorchScript cannot
compile included, runs the eager model.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

log = logging.getLogger("torchkeep")
CHECKED_CALLS = 3


class SmallBatchModel:
    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.scripted, self.checks_left = model, None, CHECKED_CALLS
        if device.type != "cpu" or torch._C._jit_can_fuse_on_cpu() or isinstance(model, torch.jit.ScriptModule):
            return
        with warnings.catch_warnings():  # torch's deprecation notice of TorchScript
            warnings.simplefilter("ignore")
            try:
                self.scripted = torch.jit.script(model)
            except (RuntimeError, TypeError, AttributeError, NotImplementedError,
                    torch.jit.frontend.FrontendError) as error:  # a model TorchScript cannot compile
                log.debug("eager model for small batches: %s", str(error).splitlines()[0] if str(error) else error)

    def __call__(self, **tensors: Any) -> torch.Tensor:
        if self.scripted is None:
            return self.model(**tensors)
        outputs = self.scripted(**tensors)
        if self.checks_left:
            self.checks_left -= 1
            eager = self.model(**tensors)
            if not torch.equal(outputs, eager):
                log.warning("TorchScript's outputs differ from the eager model's: small batches run eagerly")
                self.scripted = None
                return eager
        return outputs
