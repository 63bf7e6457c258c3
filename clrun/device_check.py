"""Device mistakes found on a CPU: a run that would break or stall on a GPU fails here.

On a CPU every tensor shares one device, so a `torch.zeros(n)` missing `device=`, a buffer kept
on the host, or an `.item()` inside the training step go unnoticed until a GPU run. With
`check_devices=true` the run goes through a `TorchFunctionMode` that keeps a virtual device.
A tensor is on the *device* when it was moved there (`.to(device)`: the loop's data, the
network when Lightning's Trainer moves it) or made with `device=`, and on the *host* when a
factory (`torch.zeros`, `torch.tensor`, `torch.arange`, ...) made it without `device=` or
`.cpu()` moved it (as Lightning does with the network after every fit); a result is on the
device if an input is, on the host if every input is. Tensors the check did not see made are
left unjudged. The run fails with one line naming the first mistake and the line of code that
made it:

- an operation mixing a device tensor with a host tensor of one or more dimensions (CUDA
  refuses it; a 0-dim host tensor is allowed, as CUDA allows CPU scalars; host indices of a
  device tensor's `x[index]` are allowed, as CUDA copies them; device indices of a host
  tensor are not);
- inside a training step (between Lightning's batch start and end, of the classifier or of a
  generator), reading a device tensor on the host: `.item()`, `.tolist()`, `.cpu()`,
  `.numpy()`, `bool()`, `float()`, `int()` — each a host–device synchronisation per step.
  A read the method itself needs is marked in its code with `host_read_allowed(reason)`.
"""

from __future__ import annotations

import sys
import traceback
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from clrun.errors import ClrunError

FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.tensor, torch.arange,
             torch.linspace, torch.logspace, torch.eye, torch.rand, torch.randn, torch.randint,
             torch.randperm, torch.as_tensor, torch.scalar_tensor}
READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy,
         torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__,
         torch.Tensor.__index__}
MOVES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.type_as}
INDEXING = {torch.Tensor.__getitem__}
COPIES = {torch.Tensor.copy_, torch.Tensor.__setitem__}
JOINS = {torch.cat, torch.stack, torch.concat, torch.hstack, torch.vstack}
KEEP = "keep"
HOST, DEVICE = "host", "device"
DEVICE_GETTER = torch._C.TensorBase.__dict__["device"]  # `tensor.device`, seen by the mode
OWN_FRAMES = ("/torch/", "/pytorch_lightning/", "/lightning_fabric/", "/lightning/",
              "device_check.py", "/contextlib.py", "/functools.py")


def torch_internal(depth: int = 3) -> bool:
    """Whether the call `depth` frames up comes from torch itself: its explicit
    `device="cpu"` makes a deliberate host tensor (Adam's step count, which its `.item()` then
    reads for free); elsewhere `device=` names the training device, on a CPU run the CPU too."""
    return "/torch/" in sys._getframe(depth).f_code.co_filename


_reads_allowed = 0  # how many `host_read_allowed` blocks are open


@contextmanager
def host_read_allowed(reason: str) -> Iterator[None]:
    """A host read inside the step that the method itself needs (GEM decides on the host
    whether to solve its QP); the device check lets it through. `reason` says why, in the
    code where it happens."""
    global _reads_allowed
    _reads_allowed += 1
    try:
        yield
    finally:
        _reads_allowed -= 1


def moving_a_module() -> bool:
    """Whether the move was asked by `nn.Module.to/.cpu/.cuda` (Lightning moving the network):
    the tensor then lives where it was moved, whereas `y = x.cpu()` leaves x where it was."""
    return sys._getframe(2).f_code.co_filename.endswith(("nn/modules/module.py",
                                                         "device_dtype_mixin.py"))


class DeviceMistake(ClrunError):
    """What would fail, or synchronise every step, on a GPU."""


def where() -> str:
    """The innermost line of code outside torch and Lightning (the one to fix)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not any(part in frame.filename for part in OWN_FRAMES):
            return f"{frame.filename}:{frame.lineno} ({frame.line})"
    return "an unknown place"


class VirtualDevice(TorchFunctionMode):
    """Tags tensors host or device and refuses what a GPU would refuse (module docstring).
    `in_step` is set by `StepWindow` while a training step runs."""

    def __init__(self) -> None:
        super().__init__()
        self._tags: dict[int, tuple[weakref.ref, str]] = {}
        self.in_step = False
        self.failed = False  # after the first mistake the run unwinds (Lightning's teardown)
        # `tensor.device` objects and the tag of their tensor: `device=x.device` makes a tensor
        # where x is
        self._devices: dict[int, tuple[torch.device, str]] = {}

    def tag(self, tensor: torch.Tensor) -> str | None:
        """HOST, DEVICE, or None for a tensor the check has no word on."""
        entry = self._tags.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def is_host(self, tensor: torch.Tensor) -> bool:
        return self.tag(tensor) == HOST

    def _device_tag(self, device: Any) -> str | None:
        """HOST or DEVICE for a `tensor.device` object the check saw read, else None."""
        entry = self._devices.get(id(device))
        return entry[1] if entry is not None and entry[0] is device else None

    def _mark(self, tensor: torch.Tensor, tag: str | None) -> None:
        key = id(tensor)
        if tag is None:
            self._tags.pop(key, None)
        else:
            self._tags[key] = (weakref.ref(tensor, lambda _, key=key: self._tags.pop(key, None)),
                               tag)

    def _mistake(self, message: str) -> DeviceMistake:
        self.failed = True
        return DeviceMistake(f"device check: {message}")

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.failed:
            return func(*args, **kwargs)
        if func in READS and self.in_step and isinstance(args[0], torch.Tensor) \
                and self.tag(args[0]) == DEVICE and not _reads_allowed \
                and not torch_internal(depth=2):
            raise self._mistake(f"{func.__name__}() reads a device tensor on the host inside a "
                                f"training step (a GPU synchronises there every step) at "
                                f"{where()}; keep it a tensor and reduce it once per epoch or "
                                "task")
        result = func(*args, **kwargs)
        if getattr(func, "__self__", None) is DEVICE_GETTER:
            tag = self.tag(args[0])
            if tag is not None:
                if len(self._devices) > 4096:
                    self._devices.clear()
                self._devices[id(result)] = (result, tag)
            return result
        tag = self._result_tag(func, args, kwargs)
        if tag is KEEP:
            return result
        first = args[0] if args else None
        for out in tree_flatten(result)[0]:
            if not isinstance(out, torch.Tensor):
                continue
            if out is first and tag == HOST and self.tag(out) == DEVICE \
                    and not moving_a_module():
                continue  # `y = x.cpu()` is x itself on a CPU; on a GPU x stays on the device
            self._mark(out, tag)
        return result

    def _result_tag(self, func: Any, args: tuple, kwargs: dict) -> str | None:
        """Where `func`'s result lives; refuses an operation mixing host and device."""
        if func in COPIES:
            return KEEP  # CUDA copies across devices into an existing tensor
        if func in FACTORIES:
            device = kwargs.get("device")
            if device is None:
                return HOST
            known = self._device_tag(device)
            if known is not None:
                return known
            return HOST if torch.device(device).type == "cpu" and torch_internal() else DEVICE
        if func is torch.Tensor.cpu:
            return HOST
        if func is torch.Tensor.__deepcopy__:  # the memo holds whatever was copied before
            return self.tag(args[0])
        if func in MOVES:
            targets = [a for a in [*args[1:], *kwargs.values()]
                       if isinstance(a, (torch.device, str, int, torch.Tensor))
                       and not isinstance(a, bool)]
            places = [t for t in targets if not isinstance(t, torch.Tensor)]
            if func is torch.Tensor.cuda or places:
                known = [self._device_tag(t) for t in places]
                return HOST if known and all(k == HOST for k in known) else DEVICE
            return self.tag(targets[0] if targets else args[0])  # a dtype change stays
        if func in INDEXING:
            self._check_index(args[0], args[1])
        checked = (args[0], *args[2:]) if func in INDEXING else (*args, *kwargs.values())
        tensors = [t for t in tree_flatten(list(checked))[0] if isinstance(t, torch.Tensor)]
        tags = [self.tag(t) for t in tensors]
        scalars_refused = func in JOINS  # CUDA allows CPU scalars in arithmetic, not in cat
        if DEVICE in tags and any(tag == HOST and (t.dim() > 0 or scalars_refused)
                                  for t, tag in zip(tensors, tags, strict=True)):
            name = getattr(func, "__name__", str(func))
            raise self._mistake(f"{name} mixes a host tensor (made without device=, or moved "
                                f"off the device) with device tensors at {where()}; create it "
                                "with device=<a device tensor>.device or move it with "
                                ".to(device)")
        if DEVICE in tags:
            return DEVICE
        return HOST if tags and all(tag == HOST for tag in tags) else None

    def _check_index(self, indexed: Any, index: Any) -> None:
        """CUDA copies host indices to the device, not device indices to the host."""
        if not isinstance(indexed, torch.Tensor) or self.tag(indexed) != HOST:
            return
        if any(isinstance(t, torch.Tensor) and self.tag(t) == DEVICE
               for t in tree_flatten([index])[0]):
            raise self._mistake(f"a host tensor is indexed by device indices at {where()}; "
                                "keep the indexed tensor on the same device as its indices")


class StepWindow(pl.Callback):
    """Marks the training steps (Lightning's batch start to end) for `VirtualDevice`."""

    def __init__(self, mode: VirtualDevice) -> None:
        self.mode = mode

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self.mode.in_step = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self.mode.in_step = False
