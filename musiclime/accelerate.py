"""Speed levers of the GPU stage that leave what is computed alone (beyond float rounding):
the forward passes' precision, ``torch.compile`` of a model's tensor-only parts, with or
without CUDA graphs, and host-to-device copies through pinned memory.

What gets compiled (:func:`compile_model`): every Transformers model inside the model (the
AST and RoBERTa encoders, a Hugging Face classifier) and musiclime's own tensor modules that
declare ``compile_unit = True`` (the Kaldi filterbank, so it fuses with the encoder's first
kernels; musicnn's front end and network). Tokenizers and the explainer's Python stay eager.
Shapes are compiled as they come (the batch dimension turns dynamic after the first new
size), so a track's last, shorter batch costs one more compile, not one per size.
"""
from __future__ import annotations

from typing import Any

from musiclime.choices import Choice


class Precision(Choice):
    AUTO = "auto"  # bf16 autocast on a GPU that has it, else fp16; fp32 on CPU
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class Compile(Choice):
    OFF = "off"        # eager PyTorch
    ON = "on"          # torch.compile (inductor) of the model's tensor parts
    GRAPHS = "graphs"  # the same, with CUDA graphs for the shapes it meets ("reduce-overhead"; CUDA only)


def compile_units(model) -> list[tuple[str, Any]]:
    """``(name, module)`` of the parts :func:`compile_model` compiles, outermost only."""
    import torch
    from transformers import PreTrainedModel
    roots = [("", model)] if isinstance(model, torch.nn.Module) else \
        [(k, v) for k, v in vars(model).items() if isinstance(v, torch.nn.Module)]
    found: list[tuple[str, Any]] = []
    for root, module in roots:
        for name, m in module.named_modules(prefix=root):
            inside = any(name.startswith(f"{n}.") for n, _ in found)
            if not inside and (isinstance(m, PreTrainedModel) or getattr(type(m), "compile_unit", False)):
                found.append((name, m))
    return found


def compile_model(model, mode: str | Compile) -> list[str]:
    """Compile ``model``'s units in place (``nn.Module.compile``); their names. The first
    call of each shape pays the compile (tens of seconds on a GPU for an AST-base), which a
    night of thousands of batches pays back; ``off`` leaves the model as it is."""
    mode = Compile.parse(mode)
    if mode is Compile.OFF:
        return []
    units = compile_units(model)
    options = {"mode": "reduce-overhead"} if mode is Compile.GRAPHS else {}
    for _, m in units:
        m.compile(**options)
    return [name or type(m).__name__ for name, m in units]


def to_device(array, device, pinned: bool = True):
    """A host array (numpy) as a float32 tensor on ``device``. On CUDA through pinned
    memory with a non-blocking copy: the host goes on (planning masks, tokenizing) while the
    copy waits its turn behind the kernels already queued, where a pageable copy would hold
    the host until they and the copy are done. The stage works a track at a time, so no
    kernels of the same track run beside the copy; ``bench/gpu_levers.py`` measures it."""
    import numpy as np
    import torch
    host = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))  # Ray's arrays are read-only
    if not (pinned and str(device).startswith("cuda")):
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
