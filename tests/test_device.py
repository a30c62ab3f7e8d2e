"""Tests for minimoe/device.py: device resolution, CPU fallback and CUDA paths.

CUDA tests skip cleanly on machines without CUDA.
Run: python -m pytest tests/test_device.py -q
"""

import pytest
import torch

from minimoe.device import autocast_context, describe, make_optimizer, resolve_device
from minimoe.errors import DeviceError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_auto_and_cpu():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "cpu" in describe(torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="no CUDA device.*--device=cpu"):
        resolve_device("cuda")


def test_unknown_device_name():
    with pytest.raises(DeviceError, match="auto, cpu, cuda"):
        resolve_device("tpu")


def test_cpu_runs_fp32_and_fused_adamw_when_available():
    with autocast_context(torch.device("cpu")):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    opt = make_optimizer([{"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.1}], torch.device("cpu"))
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    assert bool(opt.defaults.get("fused")) == ((major, minor) >= (2, 4))


@cuda
@pytest.mark.cuda
def test_cuda_uses_bf16_autocast_and_fused_adamw():
    dev = resolve_device("cuda")
    with autocast_context(dev):
        y = torch.ones(4, 4, device=dev) @ torch.ones(4, 4, device=dev)
    assert y.dtype == torch.bfloat16
    opt = make_optimizer([{"params": [torch.nn.Parameter(torch.ones(2, device=dev))], "lr": 0.1}], dev)
    assert opt.defaults["fused"]
