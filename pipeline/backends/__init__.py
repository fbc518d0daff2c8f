"""Training backends: one interface (:class:`Backend`), one module per implementation.

A backend owns everything about how a plain ``nn.Module`` is trained over ranks: the process group, the
wrapped engine, forward and backward, the optimizer step, checkpoint state, the gathered weights for export,
generation under sharded parameters and the launcher's command line. Nothing else in the project knows which
one runs. Adding one (FSDP2, say) is a module here with a :class:`Backend` subclass and its name below.
"""

from __future__ import annotations

import importlib

from pipeline.backends.base import Backend, StepResult

BACKENDS = {"deepspeed": "pipeline.backends.deepspeed:DeepSpeedBackend"}


def backend_class(name: str = "deepspeed") -> type[Backend]:
    """The backend registered as ``name``; its module (and its library) is imported only now."""
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["BACKENDS", "Backend", "StepResult", "backend_class"]
