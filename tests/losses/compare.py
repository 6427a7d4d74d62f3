"""Helpers shared by the loss tests: tolerances per dtype and comparisons of results."""

from __future__ import annotations

import pytest
import torch

# Tolerances by input dtype. The op and its twin compute in float64 for float64 inputs and in
# float32 otherwise, from the same upcast values, so bfloat16 inputs keep the float32 tolerance
# for values. Gradients are rounded once to the input dtype, and float32 values a few ulps apart
# can round to neighbours 2**-8 apart in bfloat16, hence rtol 2**-7 there.
VALUE_TOLERANCES = {
    torch.float64: {"atol": 1e-12, "rtol": 1e-10},
    torch.float32: {"atol": 1e-6, "rtol": 1e-5},
    torch.bfloat16: {"atol": 1e-6, "rtol": 1e-5},
}
GRAD_TOLERANCES = {
    torch.float64: {"atol": 1e-12, "rtol": 1e-10},
    torch.float32: {"atol": 1e-6, "rtol": 1e-5},
    torch.bfloat16: {"atol": 1e-6, "rtol": 2**-7},
}
DTYPES = [torch.float64, torch.float32, torch.bfloat16]
DTYPE_IDS = ["float64", "float32", "bfloat16"]


def implementations_agree(run, inputs, dtype):
    """Run ``run(implementation)`` for both implementations and compare everything.

    ``run`` returns ``(loss, metrics)``; ``inputs`` are the tensors whose gradients must agree.
    Returns the native result.
    """
    results = {}
    for implementation in ("native", "torch"):
        loss, metrics = run(implementation)
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        results[implementation] = (loss, metrics, grads)

    native_loss, native_metrics, native_grads = results["native"]
    twin_loss, twin_metrics, twin_grads = results["torch"]
    torch.testing.assert_close(native_loss, twin_loss, **VALUE_TOLERANCES[dtype])
    assert native_metrics.keys() == twin_metrics.keys()
    for name in native_metrics:
        torch.testing.assert_close(
            native_metrics[name], twin_metrics[name], **VALUE_TOLERANCES[dtype], msg=name
        )
    for index, (native_grad, twin_grad) in enumerate(zip(native_grads, twin_grads)):
        assert (native_grad is None) == (twin_grad is None), f"gradient {index}"
        if native_grad is None:
            continue
        assert native_grad.dtype == inputs[index].dtype, f"gradient {index}"
        torch.testing.assert_close(
            native_grad, twin_grad, **GRAD_TOLERANCES[dtype], msg=f"gradient {index}"
        )
    return results["native"]


def assert_metrics_match(ours, theirs, names, tolerance=1e-10):
    """Compare our metrics with TRL's floats (or tensors), one name at a time."""
    for name in names:
        expected = theirs[name]
        expected = expected.item() if isinstance(expected, torch.Tensor) else expected
        assert ours[name].item() == pytest.approx(expected, abs=tolerance, rel=tolerance), name


def assert_all_finite(loss, metrics, grads):
    assert torch.isfinite(loss).all()
    for name, value in metrics.items():
        assert torch.isfinite(value).all(), name
    for grad in grads:
        if grad is not None:
            assert torch.isfinite(grad).all()
