"""One device rule for every stage: ``auto``, explicit names and devices, clear errors without the GPU asked for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from diffkd_study.devices import check_device_name, resolve_device

PACKAGE = Path(__file__).resolve().parents[2] / "diffkd_study"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_the_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


def test_auto_is_cuda_when_torch_sees_a_gpu(two_gpus):
    device = resolve_device("auto")
    assert device == torch.device("cuda") and device.index is None


@pytest.mark.parametrize("name", ["cpu", torch.device("cpu")])
def test_the_cpu_is_always_available(no_cuda, name):
    device = resolve_device(name)
    assert isinstance(device, torch.device) and device == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1", torch.device("cuda", 0)])
def test_cuda_without_cuda_is_a_clear_error(no_cuda, name):
    with pytest.raises(RuntimeError, match=r"asked for but CUDA is not available on this machine; use 'cpu' or 'auto'"):
        resolve_device(name)


@pytest.mark.parametrize(("name", "expected"), [("cuda", torch.device("cuda")), ("cuda:1", torch.device("cuda", 1)),
                                                (torch.device("cuda", 0), torch.device("cuda", 0))])
def test_visible_gpus_are_returned_as_named(two_gpus, name, expected):
    assert resolve_device(name) == expected


def test_a_gpu_index_beyond_the_visible_ones_is_refused(two_gpus):
    with pytest.raises(RuntimeError, match=r"'cuda:2' asked for but torch sees 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_a_malformed_name_is_refused(no_cuda):
    with pytest.raises(RuntimeError):
        resolve_device("gpu")


def test_the_package_defines_it_once():
    """Every stage (trainer, SSD-KD, diffusion notebooks, CoMoTo) imports this function; no module has its own."""
    defining = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                      for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                      if isinstance(node, ast.FunctionDef) and "device" in node.name and "resolve" in node.name)
    assert defining == ["devices.py"]


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_a_section_accepts_the_device_names(name):
    check_device_name(name)


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "mps", ""])
def test_a_section_refuses_other_device_names(name):
    with pytest.raises(ValueError, match=r"device must be one of \['auto', 'cpu', 'cuda'\] or cuda:N"):
        check_device_name(name)
