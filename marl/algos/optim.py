"""Adam over parameters that live in one contiguous buffer.

Small policies (a 64x64 MLP) make PPO's gradient step cost per *operation*,
not per FLOP: every parameter tensor adds work to ``zero_grad``, the global
gradient norm, clipping and the optimizer's bookkeeping. :class:`FlatAdam`
moves the parameters of a module into one flat float tensor (each parameter's
``.data`` becomes a view of it) and gives each parameter a ``.grad`` that is a
view of one flat gradient buffer, which back-propagation accumulates into in
place. Zeroing, the norm, clipping and the (fused) Adam step are then one
operation each, whatever the number of tensors.

Rules that keep the views valid (checked at every :meth:`FlatAdam.step`):

* build the optimizer after the module is on its final device and dtype
  (``module.to(...)`` afterwards would give the parameters new storage);
* zero gradients with :meth:`FlatAdam.zero_grad`, never
  ``module.zero_grad()`` (which sets ``.grad`` to ``None`` and drops the views).

Every parameter always has a gradient (zeros when the loss did not reach it),
so a parameter that a loss never touches still moves by Adam's momentum; in
PPO every parameter takes part in every loss.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class FlatAdam:
    """Adam (``fused`` kernel) over parameters moved into one flat buffer.

    Args:
        params: the parameters to train (duplicates are taken once); one dtype and device.
        lr: learning rate.
        eps: Adam's epsilon.

    Attributes:
        params: the module parameters, in buffer order (each a view of :attr:`flat`).
        flat: ``[n]`` all parameter values.
        grad: ``[n]`` all gradients (each ``param.grad`` is a view of it).
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float, eps: float) -> None:
        unique: dict[int, nn.Parameter] = {}
        for p in params:
            if p.requires_grad:
                unique.setdefault(id(p), p)
        self.params = list(unique.values())
        if not self.params:
            raise ValueError("FlatAdam got no parameters that require a gradient")
        dtypes = {p.dtype for p in self.params}
        devices = {p.device for p in self.params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(f"FlatAdam needs one dtype and device; got dtypes {dtypes}, devices {devices}")
        dtype, device = dtypes.pop(), devices.pop()
        n = sum(p.numel() for p in self.params)
        self.flat = torch.empty(n, dtype=dtype, device=device)
        self.grad = torch.zeros(n, dtype=dtype, device=device)
        offset = 0
        with torch.no_grad():
            for p in self.params:
                k = p.numel()
                self.flat[offset : offset + k].copy_(p.reshape(-1))
                p.data = self.flat[offset : offset + k].view_as(p)
                p.grad = self.grad[offset : offset + k].view_as(p)
                offset += k
        self.flat.grad = self.grad
        first = self.params[0]  # all parameters move together (.to(), zero_grad()): checking one suffices
        self._first_ptrs = (first.data_ptr(), first.grad.data_ptr())
        self.adam = torch.optim.Adam([self.flat], lr=lr, eps=eps, fused=True)

    @property
    def lr(self) -> float:
        return float(self.adam.param_groups[0]["lr"])

    @lr.setter
    def lr(self, value: float) -> None:
        self.adam.param_groups[0]["lr"] = value

    def zero_grad(self) -> None:
        """Zero every gradient (one operation; the views stay)."""
        self.grad.zero_()

    def grad_norm(self) -> Tensor:
        """Euclidean norm of all gradients (a scalar tensor)."""
        return torch.linalg.vector_norm(self.grad)

    def clip_grad_norm_(self, max_norm: float, norm: Tensor) -> None:
        """Scale all gradients by ``min(1, max_norm / (norm + 1e-6))`` (as ``torch.nn.utils.clip_grad_norm_``)."""
        self.grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))

    def step(self) -> None:
        """One Adam step over the flat buffer.

        Raises:
            RuntimeError: a parameter no longer shares the buffer (the module was moved
                with ``.to()``, or its ``.grad`` was replaced, e.g. by ``module.zero_grad()``),
                so the step would not train it.
        """
        p, (data_ptr, grad_ptr) = self.params[0], self._first_ptrs
        if p.data_ptr() != data_ptr or p.grad is None or p.grad.data_ptr() != grad_ptr:
            raise RuntimeError(
                "a parameter left FlatAdam's buffer (the module was moved with .to() or its gradients "
                "were reset with module.zero_grad()); build the optimizer after moving the module and "
                "zero gradients with FlatAdam.zero_grad()"
            )
        self.adam.step()

    def state_dict(self) -> dict:
        return self.adam.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.adam.load_state_dict(state)
