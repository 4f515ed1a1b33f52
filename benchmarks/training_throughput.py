"""Training throughput (images/s) in the contiguous (NCHW) and channels-last (NHWC) memory layouts, one CPU thread.

One process, one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``). For every network a
training step is forward + loss + backward + AdamW on a fixed random batch (the cost of a step does not
depend on the pixels); the two layouts run on two copies of the same initialised network and are timed
*interleaved* step by step (contiguous, channels-last, contiguous, ...), so that a slow spell of the
shared machine hits both alike and the ratio stays fair. After ``--warmup`` untimed steps of each, the
median of the timed steps is reported (``--steps``, fewer for a network whose step is slow so that each
network takes about ``--budget`` seconds). Networks:

- the classifiers at batch 32: ``tf_efficientnet_lite2`` (the teacher) and ``lcnet_035`` (the student) at
  128 px gray (DiffKD-DCIS); ``mobilenetv2_100`` at 96 px RGB (the SSD-KD CPU profile) and 224 px RGB
  (its GPU profile);
- the diffusion UNet, built as the diffusion stage builds it (``demo`` profile, 64 px, mask-conditioned,
  on a small phantom cohort), batch 16, one step of ``diffusion.train.diffusion_loss`` + AdamW;
- the CoMoTo detector step (:class:`DetectorSpec` defaults: EfficientNet-Lite0 stage 3 + 2-convolution
  RetinaNet head, 320 px; the ``cpu`` profile uses 256 px), batch 4, detection loss;
- the teacher forward pass alone (eval mode, no gradient, batch 32; distillation runs it every step)
  at 128 px gray, 96 px RGB and 224 px RGB, and the UNet sampling forward pass (eval, no gradient, batch 32).

The last line starts ``channels_last speed-up:`` and lists the channels-last / contiguous ratio per row.

``--compile`` adds ``torch.compile`` (default inductor backend) on ``lcnet_035`` and ``tf_efficientnet_lite2``
(channels-last, training step): compile time of the first step, of a smaller last batch (a recompile)
and of the first eval pass, the steady images/s, and the projected wall time of a 10-epoch fit of
1,200 images (38 steps per epoch) eager vs compiled, compile time included.

    OMP_NUM_THREADS=1 python benchmarks/training_throughput.py            # about 4 min
    OMP_NUM_THREADS=1 python benchmarks/training_throughput.py --quick    # seconds: tiny settings (tests)
    OMP_NUM_THREADS=1 python benchmarks/training_throughput.py --compile  # + torch.compile (minutes more)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch are imported

import argparse  # noqa: E402
import copy  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from diffkd_study.models.classifier import create_classifier  # noqa: E402

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass
class Workload:
    """One timed configuration: a network, how to build a batch in a layout, and what one step computes."""

    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.memory_format], tuple]  # the step's inputs in a layout
    loss: Callable[[nn.Module, tuple], torch.Tensor] | None  # None: forward only (eval, no gradient)
    images: int  # images per step


def _classifier(name: str, size: int, channels: int, batch: int, train: bool) -> Workload:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=generator)
    y = torch.randint(0, 2, (batch,), generator=generator)
    kind = "train" if train else "teacher forward"
    return Workload(
        f"{name} {size}px {channels}ch {kind}",
        lambda: create_classifier(name, 2, channels, "none"),
        lambda fmt: (x.contiguous(memory_format=fmt), y) if train else (x.contiguous(memory_format=fmt),),
        (lambda model, inputs: F.cross_entropy(model(inputs[0]), inputs[1])) if train else None,
        batch,
    )


def _unet(cohort: Path, batch: int, size: int, train: bool) -> Workload:
    from diffkd_study.data.schema import read_manifest
    from diffkd_study.methods.diffkd.diffusion.train import (
        TrainConfig,
        build_model,
        diffusion_loss,
        load_training_data,
        make_noise_scheduler,
    )

    manifest = read_manifest(cohort / "phantom.csv")
    config = TrainConfig(profile="demo", image_size=size, mask_conditioning=True, batch_size=batch)
    torch.manual_seed(0)
    data = load_training_data(manifest, build_model(manifest, config), root=cohort, image_size=size)
    rows = np.arange(batch) % len(data.images)
    if train:
        scheduler = make_noise_scheduler(config)

        def loss(model: nn.Module, inputs: tuple) -> torch.Tensor:
            return diffusion_loss(model, scheduler, data, rows, config, torch.Generator().manual_seed(0),
                                  torch.device("cpu"), memory_format=inputs[0])

        return Workload(f"diffusion UNet demo {size}px train", lambda: build_model(manifest, config),
                        lambda fmt: (fmt,), loss, batch)
    noisy = torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    mask = data.masks[torch.as_tensor(rows)].float()
    timesteps = torch.full((batch,), 500)
    conditions = data.conditions.index(torch.as_tensor(rows))
    return Workload(f"diffusion UNet demo {size}px sampling forward", lambda: build_model(manifest, config),
                    lambda fmt: (noisy.contiguous(memory_format=fmt), timesteps, conditions,
                                 mask.contiguous(memory_format=fmt)), None, batch)


def _detector(size: int, batch: int) -> Workload:
    """The default CoMoTo detector (its layout is the model's: the RetinaNet transform stacks the images itself)."""
    from diffkd_study.methods.comoto.detector import DetectorSpec, create_detector

    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, size, size, generator=generator) for _ in range(batch)]
    targets = [{"boxes": torch.tensor([[0.1, 0.15, 0.3, 0.35]]) * size, "labels": torch.zeros(1, dtype=torch.int64)}
               for _ in range(batch)]
    spec = DetectorSpec(weights="none", image_size=size)

    def loss(model: nn.Module, inputs: tuple) -> torch.Tensor:
        return sum(model(*inputs).values())

    return Workload(f"CoMoTo RetinaNet lite0 {size}px train", lambda: create_detector(spec),
                    lambda fmt: (images, targets), loss, batch)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer | None, work: Workload, inputs: tuple) -> float:
    started = time.perf_counter()
    if work.loss is None:
        with torch.no_grad():
            model(*inputs)
    else:
        loss = work.loss(model, inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def time_layouts(work: Workload, steps: int, warmup: int, budget_s: float) -> dict[str, float]:
    """Median seconds per step of each layout, timed interleaved on two copies of one initialised network."""
    torch.manual_seed(0)
    base = work.build()
    models, optimizers, inputs = {}, {}, {}
    for layout, fmt in LAYOUTS.items():
        model = copy.deepcopy(base).to(memory_format=fmt)
        model.train(work.loss is not None)
        models[layout] = model
        optimizers[layout] = torch.optim.AdamW(model.parameters(), lr=1e-4) if work.loss is not None else None
        inputs[layout] = work.batch(fmt)
    first = 0.0
    for _ in range(warmup):
        for layout in LAYOUTS:
            first = _step(models[layout], optimizers[layout], work, inputs[layout])
    n = max(3, min(steps, math.ceil(budget_s / max(2 * first, 1e-9))))
    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for _ in range(n):
        for layout in LAYOUTS:
            times[layout].append(_step(models[layout], optimizers[layout], work, inputs[layout]))
    return {layout: statistics.median(t) for layout, t in times.items()} | {"steps": n}


def compile_trial(name: str, size: int, batch: int, steps: int, epochs: int = 10, n_images: int = 1200) -> str:
    """``torch.compile`` vs eager (both channels-last) on one classifier's training step: compile times, steady
    images/s and the projected wall time of an ``epochs``-epoch fit of ``n_images`` (compile time included)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=generator).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), generator=generator)
    last = n_images % batch or batch
    torch.manual_seed(0)
    base = create_classifier(name, 2, 1, "none").to(memory_format=torch.channels_last)
    rates, overhead = {}, {}
    for mode in ("eager", "compiled"):
        model = copy.deepcopy(base)
        run = torch.compile(model) if mode == "compiled" else model
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(inputs: torch.Tensor, targets: torch.Tensor, run=run, optimizer=optimizer) -> float:
            started = time.perf_counter()
            loss = F.cross_entropy(run(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - started

        try:
            first = step(x, y)
            partial = step(x[:last], y[:last])
            run.eval()
            started = time.perf_counter()
            with torch.no_grad():
                run(x)
            evaluation = time.perf_counter() - started
            run.train()
            step(x, y)
            timed = [step(x, y) for _ in range(steps)]
        except Exception as error:  # noqa: BLE001  (a failed compile is a result to report)
            return f"  {name} {size}px: torch.compile failed: {type(error).__name__}: {str(error)[:200]}"
        median = statistics.median(timed)
        rates[mode] = batch / median
        overhead[mode] = max(0.0, first - median) + max(0.0, partial - median) + evaluation
    per_epoch = math.ceil(n_images / batch)
    fit = {mode: overhead[mode] + epochs * per_epoch * batch / rates[mode] for mode in rates}
    return (f"  {name} {size}px 1ch channels_last, batch {batch}: eager {rates['eager']:.1f} images/s, compiled "
            f"{rates['compiled']:.1f} images/s ({rates['compiled'] / rates['eager']:.2f}x); compile time "
            f"{overhead['compiled']:.0f} s (first step + last partial batch + first eval pass); projected "
            f"{epochs}-epoch fit of {n_images} images: eager {fit['eager'] / 60:.1f} min, compiled "
            f"{fit['compiled'] / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per layout (at most)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per layout first")
    parser.add_argument("--budget", type=float, default=25.0, help="seconds of timed steps per network, about")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and batches: a smoke run for tests")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the two classifiers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    big, small, teacher = (32, 16, "tf_efficientnet_lite2") if not args.quick else (4, 4, "tf_efficientnet_lite0")
    px = 1 if not args.quick else 0.5
    with tempfile.TemporaryDirectory() as tmp:
        from diffkd_study.data.phantom import generate_phantom_cohort

        cohort = Path(tmp) / "cohort"
        generate_phantom_cohort(cohort, n_per_center=4 if args.quick else 12, seed=0, image_size=int(64 * px),
                                progress=False)
        works = [
            _classifier(teacher, int(128 * px), 1, big, train=True),
            _classifier("lcnet_035", int(128 * px), 1, big, train=True),
            _classifier("mobilenetv2_100", int(96 * px), 3, big, train=True),
            *([] if args.quick else [_classifier("mobilenetv2_100", 224, 3, big, train=True)]),
            _unet(cohort, small, int(64 * px), train=True),
            _detector(320 if not args.quick else 64, 4 if not args.quick else 2),
            _classifier(teacher, int(128 * px), 1, big, train=False),
            _classifier(teacher, int(96 * px), 3, big, train=False),
            *([] if args.quick else [_classifier(teacher, 224, 3, big, train=False)]),
            _unet(cohort, big, int(64 * px), train=False),
        ]
        print(f"throughput, 1 thread, images/s (median of timed steps after {args.warmup} warm-up step(s); "
              "layouts interleaved step by step):")
        print(f"  {'network':<48} {'steps':>5} {'contiguous':>11} {'channels_last':>14} {'ratio':>6}")
        ratios = {}
        for work in works:
            seconds = time_layouts(work, 2 if args.quick else args.steps, args.warmup, 0 if args.quick else args.budget)
            rate = {layout: work.images / seconds[layout] for layout in LAYOUTS}
            ratios[work.name] = rate["channels_last"] / rate["contiguous"]
            print(f"  {work.name:<48} {seconds['steps']:>5} {rate['contiguous']:>11.1f} "
                  f"{rate['channels_last']:>14.1f} {ratios[work.name]:>5.2f}x", flush=True)
        if args.compile:
            print("torch.compile (inductor, CPU, 1 thread):")
            for name in ("lcnet_035", teacher):
                print(compile_trial(name, int(128 * px), big, 2 if args.quick else 5,
                                    n_images=1200 if not args.quick else 12), flush=True)
    print("channels_last speed-up: " + "; ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()))


if __name__ == "__main__":
    main()
