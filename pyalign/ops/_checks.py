"""Checks shared by the Python kernels of the ops: one device, and no double backward."""

from __future__ import annotations

import torch


class DoubleBackwardError(RuntimeError):
    """Raised when a gradient computed by one of pyalign's ops is differentiated again."""


def register_no_double_backward(backward_op: str) -> None:
    """Register an autograd formula for `backward_op` that raises when it is differentiated.

    Without one, autograd treats the backward op's outputs as constants, so a second
    derivative (a gradient penalty, a Hessian-vector product) would silently lose every term
    that passes through the op.
    """

    def backward(ctx, *grads):
        raise DoubleBackwardError(
            f"{backward_op} has no derivative: pyalign's ops support first derivatives only, "
            "so their gradients cannot be differentiated again (create_graph=True followed by "
            "a second backward); use backend.kernels: torch for second derivatives"
        )

    torch.library.register_autograd(backward_op, backward, setup_context=_save_nothing)


def _save_nothing(ctx, inputs, output):
    pass


def checking_devices(op_name: str, fake):
    """Wrap the fake kernel of ``op_name`` so that it first checks its tensors share a device.

    The fake kernels run whenever one input is a meta tensor, and would then return empty
    tensors for a call that the real kernels reject, so they check this themselves. The error
    names each tensor argument and its device.
    """
    namespace, name = op_name.split("::")
    schema = getattr(getattr(torch.ops, namespace), name).default._schema
    argument_names = [argument.name for argument in schema.arguments]

    def checked(*args, **kwargs):
        named = {**dict(zip(argument_names, args)), **kwargs}
        devices = {
            argument: value.device
            for argument, value in named.items()
            if isinstance(value, torch.Tensor)
        }
        if len(set(devices.values())) > 1:
            described = ", ".join(f"{argument} on {device}" for argument, device in devices.items())
            raise ValueError(f"{op_name}: all tensors must be on one device, got {described}")
        return fake(*args, **kwargs)

    return checked
