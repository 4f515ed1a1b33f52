"""Efficiency measurement: FLOPs of layers counted by hand, sizes, latency results, teacher/student table."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from diffkd_study.layout import layout_name
from diffkd_study.metrics import efficiency
from diffkd_study.metrics.efficiency import (
    LatencyResult,
    compare_models,
    count_flops,
    count_parameters,
    cpu_latencies,
    cpu_latency,
    cpu_throughput,
    gpu_latency,
    in_layout,
    model_file_size,
    onnx_cpu_latency,
    onnxruntime_available,
)


@pytest.mark.parametrize(
    ("layer", "input_shape", "flops"),
    [
        # batch 2 x 4 outputs x 3 inputs = 24 multiply-accumulates; the bias add is not counted
        (nn.Linear(3, 4), (2, 3), 2 * 2 * 4 * 3),
        # 3x3 output positions x 3 output channels, each 2 input channels x 3x3 kernel = 486 MACs
        (nn.Conv2d(2, 3, 3), (1, 2, 5, 5), 2 * (3 * 3 * 3) * (2 * 3 * 3)),
        # depthwise: 4 channels x 5x5 positions (padding 1) x 3x3 kernel x 1 input channel = 900 MACs
        (nn.Conv2d(4, 4, 3, padding=1, groups=4), (1, 4, 5, 5), 2 * 4 * 5 * 5 * 9),
        # stride 2 on 6x6 -> 3x3 positions x 5 channels x 1 input channel x 2x2 kernel = 180 MACs
        (nn.Conv2d(1, 5, 2, stride=2), (1, 1, 6, 6), 2 * 3 * 3 * 5 * 4),
    ],
)
def test_flops_of_single_layers_match_hand_counts(layer, input_shape, flops):
    count = count_flops(layer, input_shape)
    assert count.flops == flops
    assert count.macs == flops // 2
    assert count.input_shape == input_shape


def test_flops_add_up_over_a_network_and_ignore_elementwise_ops():
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 5)
    )
    net.train()
    count = count_flops(net, (3, 1, 6, 6))
    conv = 2 * 3 * (2 * 4 * 4) * (1 * 9)
    linear = 2 * 3 * 5 * 32
    assert count.flops == conv + linear
    assert count.by_operator == {"aten.convolution": conv, "aten.addmm": linear}
    assert net.training


def test_parameter_counts_split_trainable():
    layer = nn.Linear(3, 4)
    layer.bias.requires_grad_(False)
    count = count_parameters(layer)
    assert (count.total, count.trainable) == (16, 12)


def test_file_size_is_the_safetensors_file_size(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "net.safetensors")
    size = model_file_size(net)
    assert size == (tmp_path / "net.safetensors").stat().st_size
    assert size > 4 * (2 * 9 + 2 + 4 * 2) + 8  # float32 tensors + int64 num_batches_tracked


def test_cpu_latency_result_is_sane_and_settings_are_restored():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    previous = torch.get_num_threads()
    result = cpu_latency(net, (1, 1, 16, 16), threads=1, warmup=2, runs=7)
    assert isinstance(result, LatencyResult)
    assert (result.runs, result.threads, result.input_shape, result.device) == (7, 1, (1, 1, 16, 16), "cpu")
    assert 0 < result.median_ms < 1000 and 0 <= result.iqr_ms < 1000
    assert torch.get_num_threads() == previous
    assert net.training


def test_latency_is_measured_channels_last_by_default_and_contiguous_on_request():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    default = cpu_latency(net, (1, 1, 16, 16), warmup=1, runs=3)
    contiguous = cpu_latency(net, (1, 1, 16, 16), warmup=1, runs=3, memory_format=torch.contiguous_format)
    assert (default.memory_format, contiguous.memory_format) == ("channels_last", "contiguous")
    assert cpu_throughput(net, (1, 16, 16), batch=2, warmup=1, runs=3).memory_format == "channels_last"
    assert net[3].weight.is_contiguous()  # the caller's model keeps its layout: a copy is timed
    assert not net[3].weight.is_contiguous(memory_format=torch.channels_last)
    table = compare_models(net, net, (1, 1, 16, 16), warmup=1, runs=3)
    assert table.attrs["memory_format"] == "channels_last"


def test_the_channels_last_copy_gives_the_contiguous_outputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8)).eval()
    x = torch.randn(2, 3, 12, 12)
    copy = in_layout(net, torch.channels_last)
    assert copy[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(copy(x.contiguous(memory_format=torch.channels_last)), net(x), rtol=1e-4, atol=1e-6)
    assert layout_name(torch.channels_last) == "channels_last"
    with pytest.raises(ValueError, match="memory_format"):
        layout_name(torch.preserve_format)


def test_summary_is_median_and_interquartile_range():
    median, iqr = efficiency._summarise([0.001, 0.002, 0.003, 0.004, 0.005])
    assert median == pytest.approx(3.0) and iqr == pytest.approx(2.0)


def test_latency_arguments_are_checked():
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        cpu_latency(net, (1, 2), threads=0)
    with pytest.raises(ValueError, match="runs must be >= 2"):
        cpu_latency(net, (1, 2), runs=1)


def test_interleaved_latencies_cover_every_model():
    results = cpu_latencies({"a": nn.Linear(8, 8), "b": nn.Linear(8, 2)}, (1, 8), warmup=1, runs=4)
    assert set(results) == {"a", "b"}
    assert all(r.runs == 4 and r.median_ms > 0 for r in results.values())


def test_cpu_throughput_counts_images():
    result = cpu_throughput(nn.Conv2d(1, 2, 3), image_shape=(1, 8, 8), batch=4, threads=1, warmup=1, runs=3)
    assert (result.batch, result.threads, result.image_shape) == (4, 1, (1, 8, 8))
    assert result.images_per_s > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA answer")
def test_gpu_latency_is_none_without_cuda():
    assert gpu_latency(nn.Linear(2, 2), (1, 2)) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_latency_on_cuda():
    result = gpu_latency(nn.Linear(64, 64), (8, 64), warmup=2, runs=5)
    assert result.runs == 5 and result.median_ms > 0 and result.threads is None


def test_onnx_latency_is_none_without_onnxruntime(monkeypatch):
    monkeypatch.setattr(efficiency, "onnxruntime_available", lambda: False)
    assert onnx_cpu_latency(nn.Linear(2, 2), (1, 2)) is None


@pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime and onnx are optional")
def test_onnx_latency_with_onnxruntime():
    result = onnx_cpu_latency(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 1, 8, 8), warmup=1, runs=3)
    assert result.device == "cpu-onnxruntime" and result.median_ms > 0 and result.threads == 1


def test_compare_models_tabulates_ratios():
    teacher = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    student = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 8, 3))
    table = compare_models(teacher, student, (1, 1, 10, 10), warmup=1, runs=3)
    assert list(table.columns) == ["teacher", "student", "student_to_teacher", "teacher_to_student"]
    params_t, params_s = 8 * 9 + 8 + 8 * 8 * 9 + 8, 2 * 9 + 2 + 2 * 8 * 9 + 8
    assert table.loc["params", "teacher"] == params_t and table.loc["params", "student"] == params_s
    assert table.loc["params", "student_to_teacher"] == pytest.approx(params_s / params_t)
    flops_t = 2 * (8 * 8 * 8 * 9) + 2 * (8 * 6 * 6 * 8 * 9)
    flops_s = 2 * (2 * 8 * 8 * 9) + 2 * (8 * 6 * 6 * 2 * 9)
    assert table.loc["GMACs", "teacher"] * 1e9 == pytest.approx(flops_t / 2)
    assert table.loc["GFLOPs", "teacher_to_student"] == pytest.approx(flops_t / flops_s)
    assert math.isnan(table.loc["CPU latency IQR ms", "student_to_teacher"])
    assert table.loc["CPU latency median ms", "teacher_to_student"] == pytest.approx(
        1 / table.loc["CPU latency median ms", "student_to_teacher"]
    )
    assert table.attrs["input_shape"] == (1, 1, 10, 10) and table.attrs["threads"] == 1
