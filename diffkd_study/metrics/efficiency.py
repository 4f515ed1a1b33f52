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
- Memory layout: latency and throughput are measured on a copy of the model and an input in
  ``memory_format``, by default :data:`MEMORY_FORMAT` (channels-last, NHWC: the layout the classifiers are
  trained in; ``torch.contiguous_format`` measures NCHW); each result names it (``memory_format``) and so
  do the tables' ``attrs``. The layout changes speed, not the outputs (equal to float rounding); it does
  not apply to ONNX Runtime, which is fed an NCHW array and picks its own internal layout.
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

from diffkd_study.layout import MEMORY_FORMAT, layout_name

#: the layout latency is measured in by default: the one the classifiers are trained in

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
    (None on the GPU), the input shape, the device and the memory layout of the model and input.
    """

    median_ms: float
    iqr_ms: float
    runs: int
    threads: int | None  # None on the GPU
    input_shape: tuple[int, ...]
    device: str = "cpu"
    memory_format: str = "channels_last"  # "channels_last" or "contiguous" (NCHW)


@dataclass(frozen=True)
class ThroughputResult:
    """Images per second at batch size ``batch`` (median batch time over ``runs``), threads, per-image shape and
    memory layout."""

    images_per_s: float
    batch: int
    runs: int
    threads: int
    image_shape: tuple[int, ...]
    memory_format: str = "channels_last"


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


def _probe(model: nn.Module, input_shape: tuple[int, ...],
           memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    probe = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    return probe.contiguous(memory_format=memory_format) if probe.dim() == 4 else probe


def in_layout(model: nn.Module, memory_format: torch.memory_format) -> nn.Module:
    """A copy of ``model`` whose 4-D weights are in ``memory_format`` (the caller's model is left as it is)."""
    layout_name(memory_format)
    return copy.deepcopy(model).to(memory_format=memory_format)


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
    model: nn.Module, input_shape: tuple[int, ...], threads: int = 1, warmup: int = 10, runs: int = 30,
    memory_format: torch.memory_format = MEMORY_FORMAT,
) -> LatencyResult:
    """Median and IQR of CPU forward time in ms for a tensor of ``input_shape`` (model must be on the CPU), model
    and input in ``memory_format``."""
    return cpu_latencies({"model": model}, input_shape, threads, warmup, runs, memory_format)["model"]


def cpu_latencies(
    models: Mapping[str, nn.Module],
    input_shape: tuple[int, ...],
    threads: int = 1,
    warmup: int = 10,
    runs: int = 30,
    memory_format: torch.memory_format = MEMORY_FORMAT,
) -> dict[str, LatencyResult]:
    """:func:`cpu_latency` of several models, timed in turn run by run, each a copy in ``memory_format``.

    Interleaving makes a slow spell of a shared machine hit every model alike, so ratios between the
    models stay fair even when the absolute times drift. Each timed pass follows an untimed pass of the
    same model, so it runs with warm caches as it would when deployed alone.
    """
    input_shape = tuple(input_shape)
    layout = layout_name(memory_format)
    if runs < 2:
        raise ValueError(f"runs must be >= 2 to give a spread (got {runs})")
    models = {name: in_layout(model, memory_format) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with _threads(threads), contextlib.ExitStack() as stack, torch.inference_mode():
        inputs = {}
        for name, model in models.items():
            stack.enter_context(_eval_mode(model))
            inputs[name] = _probe(model, input_shape, memory_format)
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
        name: LatencyResult(*_summarise(t), runs, threads, input_shape, "cpu", layout) for name, t in times.items()
    }


def cpu_throughput(
    model: nn.Module,
    image_shape: tuple[int, ...] = (1, 128, 128),
    batch: int = 32,
    threads: int | None = None,
    warmup: int = 2,
    runs: int = 10,
    memory_format: torch.memory_format = MEMORY_FORMAT,
) -> ThroughputResult:
    """Images per second at batch size ``batch`` (median batch time), with ``threads`` (default: all set), model
    and input in ``memory_format``."""
    threads = torch.get_num_threads() if threads is None else threads
    latency = cpu_latency(model, (batch, *image_shape), threads=threads, warmup=warmup, runs=runs,
                          memory_format=memory_format)
    return ThroughputResult(batch / (latency.median_ms / 1e3), batch, runs, threads, tuple(image_shape),
                            latency.memory_format)


def gpu_latency(
    model: nn.Module, input_shape: tuple[int, ...], warmup: int = 10, runs: int = 30,
    memory_format: torch.memory_format = MEMORY_FORMAT,
) -> LatencyResult | None:
    """Forward time on the first CUDA device, timed with CUDA events on a copy of the model in ``memory_format``;
    None without CUDA."""
    if not torch.cuda.is_available():
        return None
    input_shape = tuple(input_shape)
    layout = layout_name(memory_format)
    device = torch.device("cuda")
    replica = in_layout(model, memory_format).to(device).eval()
    x = torch.randn(input_shape, device=device)
    x = x.contiguous(memory_format=memory_format) if x.dim() == 4 else x
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
    return LatencyResult(median, iqr, runs, None, input_shape, torch.cuda.get_device_name(device), layout)


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
    return LatencyResult(median, iqr, runs, threads, input_shape, "cpu-onnxruntime", "contiguous")  # NCHW feed


def measure_efficiency(
    model: nn.Module, input_shape: tuple[int, ...], threads: int = 1, warmup: int = 10, runs: int = 30,
    memory_format: torch.memory_format = MEMORY_FORMAT,
) -> ModelEfficiency:
    """Parameters, FLOPs, serialised size and CPU latency of ``model`` for a tensor of ``input_shape``
    (batch first), with ``threads`` CPU threads, ``warmup`` untimed and ``runs`` timed passes, in ``memory_format``.
    """
    return ModelEfficiency(
        params=count_parameters(model),
        flops=count_flops(model, input_shape),
        file_bytes=model_file_size(model),
        cpu_latency=cpu_latency(model, input_shape, threads=threads, warmup=warmup, runs=runs,
                                memory_format=memory_format),
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
        "memory_format": teacher.cpu_latency.memory_format,
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
    memory_format: torch.memory_format = MEMORY_FORMAT,
) -> pd.DataFrame:
    """Teacher vs student on one input shape: sizes, FLOPs, CPU latency (interleaved, in ``memory_format``, named
    in the table's ``attrs["memory_format"]``) and their ratios.

    ``onnx=True`` adds onnxruntime latency rows when onnxruntime is installed (left out otherwise).
    """
    latency = cpu_latencies({"teacher": teacher, "student": student}, input_shape, threads, warmup, runs,
                            memory_format)
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
