"""Model size and speed: parameters, FLOPs, serialised size, CPU/GPU latency, throughput, teacher vs student.

Conventions, stated once:

- ``input_shape`` is always the full tensor shape, batch first: ``(1, 1, 128, 128)`` is one 128 px gray
  image. :func:`cpu_throughput` takes the per-image ``image_shape`` and a batch size.
- FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``: matrix multiplications and
  convolutions (and attention kernels), two FLOPs per multiply-accumulate. Bias additions, normalisation,
  activations, pooling and other element-wise work are not counted. MACs = FLOPs / 2. Counted for the
  whole ``input_shape`` (divide by the batch size for per-image figures).
- File size: the bytes of the state dict (parameters and buffers) serialised as safetensors.
- Latency: wall-clock time of one forward pass in eval mode under ``torch.inference_mode``, after
  ``warmup`` untimed passes; median and inter-quartile range over ``runs`` timed passes. CPU latency runs
  with ``torch.set_num_threads(threads)`` (restored afterwards); for single-thread figures also start the
  process with ``OMP_NUM_THREADS=1``, as ``benchmarks/model_efficiency.py`` does.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ParameterCount:
    """Number of parameters of a model: all, and those that require gradients."""

    total: int
    trainable: int


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward pass on ``input_shape`` (two per multiply-accumulate), in total and per operator."""

    flops: int
    input_shape: tuple[int, ...]
    by_operator: dict[str, int]

    @property
    def macs(self) -> int:
        """Multiply-accumulates: FLOPs / 2."""
        return self.flops // 2


@dataclass(frozen=True)
class LatencyResult:
    """Forward-pass latency: median and inter-quartile range in ms over ``runs`` timed passes, the thread count
    (None on the GPU), the input shape and the device.
    """

    median_ms: float
    iqr_ms: float
    runs: int
    threads: int | None  # None on the GPU
    input_shape: tuple[int, ...]
    device: str = "cpu"


@dataclass(frozen=True)
class ThroughputResult:
    """Images per second at batch size ``batch`` (median batch time over ``runs``), threads and per-image shape."""

    images_per_s: float
    batch: int
    runs: int
    threads: int
    image_shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelEfficiency:
    """Everything :func:`compare_models` tabulates for one model."""

    params: ParameterCount
    flops: FlopCount
    file_bytes: int
    cpu_latency: LatencyResult
    onnx_latency: LatencyResult | None = None


def count_parameters(model: nn.Module) -> ParameterCount:
    """The total and trainable parameter counts of ``model``."""
    params = list(model.parameters())
    return ParameterCount(
        total=sum(p.numel() for p in params), trainable=sum(p.numel() for p in params if p.requires_grad)
    )


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _probe(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    return torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> FlopCount:
    """FLOPs of one eval-mode forward pass on a tensor of ``input_shape`` (see the module docstring)."""
    input_shape = tuple(input_shape)
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.inference_mode(), counter:
        model(_probe(model, input_shape))
    by_operator = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCount(flops=int(counter.get_total_flops()), input_shape=input_shape, by_operator=by_operator)


def model_file_size(model: nn.Module) -> int:
    """Bytes of the model's state dict (parameters and buffers) serialised as safetensors."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    return len(save(tensors))


def _summarise(times_s: list[float]) -> tuple[float, float]:
    q1, median, q3 = statistics.quantiles(times_s, n=4, method="inclusive")
    return median * 1e3, (q3 - q1) * 1e3


@contextmanager
def _threads(threads: int) -> Iterator[None]:
    if threads < 1:
        raise ValueError(f"threads must be >= 1 (got {threads})")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _time_calls(call: Callable[[], object], warmup: int, runs: int) -> list[float]:
    if runs < 2:
        raise ValueError(f"runs must be >= 2 to give a spread (got {runs})")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def cpu_latency(
    model: nn.Module, input_shape: tuple[int, ...], threads: int = 1, warmup: int = 10, runs: int = 30
) -> LatencyResult:
    """Median and IQR of CPU forward time in ms for a tensor of ``input_shape`` (model must be on the CPU)."""
    return cpu_latencies({"model": model}, input_shape, threads, warmup, runs)["model"]


def cpu_latencies(
    models: Mapping[str, nn.Module],
    input_shape: tuple[int, ...],
    threads: int = 1,
    warmup: int = 10,
    runs: int = 30,
) -> dict[str, LatencyResult]:
    """:func:`cpu_latency` of several models, timed in turn run by run.

    Interleaving makes a slow spell of a shared machine hit every model alike, so ratios between the
    models stay fair even when the absolute times drift. Each timed pass follows an untimed pass of the
    same model, so it runs with warm caches as it would when deployed alone.
    """
    input_shape = tuple(input_shape)
    if runs < 2:
        raise ValueError(f"runs must be >= 2 to give a spread (got {runs})")
    times: dict[str, list[float]] = {name: [] for name in models}
    with _threads(threads), contextlib.ExitStack() as stack, torch.inference_mode():
        inputs = {}
        for name, model in models.items():
            stack.enter_context(_eval_mode(model))
            inputs[name] = _probe(model, input_shape)
            if inputs[name].device.type != "cpu":
                raise ValueError(f"cpu latency needs {name} on the CPU (it is on {inputs[name].device})")
            for _ in range(warmup):
                model(inputs[name])
        for _ in range(runs):
            for name, model in models.items():
                if len(models) > 1:
                    model(inputs[name])  # re-warm the caches the other models' passes evicted
                start = time.perf_counter()
                model(inputs[name])
                times[name].append(time.perf_counter() - start)
    return {
        name: LatencyResult(*_summarise(t), runs, threads, input_shape, "cpu") for name, t in times.items()
    }


def cpu_throughput(
    model: nn.Module,
    image_shape: tuple[int, ...] = (1, 128, 128),
    batch: int = 32,
    threads: int | None = None,
    warmup: int = 2,
    runs: int = 10,
) -> ThroughputResult:
    """Images per second at batch size ``batch`` (median batch time), with ``threads`` (default: all set)."""
    threads = torch.get_num_threads() if threads is None else threads
    latency = cpu_latency(model, (batch, *image_shape), threads=threads, warmup=warmup, runs=runs)
    return ThroughputResult(batch / (latency.median_ms / 1e3), batch, runs, threads, tuple(image_shape))


def gpu_latency(
    model: nn.Module, input_shape: tuple[int, ...], warmup: int = 10, runs: int = 30
) -> LatencyResult | None:
    """Forward time on the first CUDA device, timed with CUDA events on a copy of the model; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    input_shape = tuple(input_shape)
    device = torch.device("cuda")
    replica = copy.deepcopy(model).to(device).eval()
    x = torch.randn(input_shape, device=device)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            replica(x)
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            replica(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    median, iqr = _summarise(times)
    return LatencyResult(median, iqr, runs, None, input_shape, torch.cuda.get_device_name(device))


def onnxruntime_available() -> bool:
    """Whether ``onnx`` and ``onnxruntime`` are installed (for the ONNX Runtime latency)."""
    return (
        importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
    )


def onnx_cpu_latency(
    model: nn.Module, input_shape: tuple[int, ...], threads: int = 1, warmup: int = 10, runs: int = 30
) -> LatencyResult | None:
    """Latency of the model exported to ONNX and run by onnxruntime on the CPU; None if it is not installed.

    onnxruntime and onnx are optional: nothing else in the package needs them.
    """
    if not onnxruntime_available():
        return None
    import onnxruntime

    input_shape = tuple(input_shape)
    with tempfile.TemporaryDirectory() as folder, _eval_mode(model):
        path = Path(folder) / "model.onnx"
        x = _probe(model, input_shape).cpu()
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated, but the dynamo one would add onnxscript as a dependency
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, (x,), str(path), input_names=["input"], output_names=["logits"], dynamo=False
            )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"input": x.numpy()}
        times = _time_calls(lambda: session.run(None, feed), warmup, runs)
    median, iqr = _summarise(times)
    return LatencyResult(median, iqr, runs, threads, input_shape, "cpu-onnxruntime")


def measure_efficiency(
    model: nn.Module, input_shape: tuple[int, ...], threads: int = 1, warmup: int = 10, runs: int = 30
) -> ModelEfficiency:
    """Parameters, FLOPs, serialised size and CPU latency of ``model`` for a tensor of ``input_shape``
    (batch first), with ``threads`` CPU threads, ``warmup`` untimed and ``runs`` timed passes.
    """
    return ModelEfficiency(
        params=count_parameters(model),
        flops=count_flops(model, input_shape),
        file_bytes=model_file_size(model),
        cpu_latency=cpu_latency(model, input_shape, threads=threads, warmup=warmup, runs=runs),
    )


def efficiency_table(teacher: ModelEfficiency, student: ModelEfficiency) -> pd.DataFrame:
    """One row per metric; ``student_to_teacher`` is the fraction, ``teacher_to_student`` the 'x times'."""
    rows = {
        "params": (teacher.params.total, student.params.total),
        "GFLOPs": (teacher.flops.flops / 1e9, student.flops.flops / 1e9),
        "GMACs": (teacher.flops.macs / 1e9, student.flops.macs / 1e9),
        "file MB (safetensors)": (teacher.file_bytes / 1e6, student.file_bytes / 1e6),
        "CPU latency median ms": (teacher.cpu_latency.median_ms, student.cpu_latency.median_ms),
        "CPU latency IQR ms": (teacher.cpu_latency.iqr_ms, student.cpu_latency.iqr_ms),
    }
    if teacher.onnx_latency is not None and student.onnx_latency is not None:
        rows["onnxruntime latency median ms"] = (
            teacher.onnx_latency.median_ms,
            student.onnx_latency.median_ms,
        )
        rows["onnxruntime latency IQR ms"] = (teacher.onnx_latency.iqr_ms, student.onnx_latency.iqr_ms)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["teacher", "student"])
    table.index.name = "metric"
    ratio_rows = ~table.index.str.endswith("IQR ms")  # a ratio of spreads means nothing
    table["student_to_teacher"] = (table["student"] / table["teacher"]).where(ratio_rows)
    table["teacher_to_student"] = (table["teacher"] / table["student"]).where(ratio_rows)
    table.attrs = {
        "input_shape": teacher.flops.input_shape,
        "threads": teacher.cpu_latency.threads,
        "runs": teacher.cpu_latency.runs,
    }
    return table


def compare_models(
    teacher: nn.Module,
    student: nn.Module,
    input_shape: tuple[int, ...],
    threads: int = 1,
    warmup: int = 10,
    runs: int = 30,
    onnx: bool = False,
) -> pd.DataFrame:
    """Teacher vs student on one input shape: sizes, FLOPs, CPU latency (interleaved) and their ratios.

    ``onnx=True`` adds onnxruntime latency rows when onnxruntime is installed (left out otherwise).
    """
    latency = cpu_latencies({"teacher": teacher, "student": student}, input_shape, threads, warmup, runs)
    measured = {
        role: ModelEfficiency(
            params=count_parameters(model),
            flops=count_flops(model, input_shape),
            file_bytes=model_file_size(model),
            cpu_latency=latency[role],
            onnx_latency=onnx_cpu_latency(model, input_shape, threads, warmup, runs) if onnx else None,
        )
        for role, model in (("teacher", teacher), ("student", student))
    }
    return efficiency_table(measured["teacher"], measured["student"])
