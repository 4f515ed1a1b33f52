"""Teacher vs student: parameters, FLOPs, safetensors size and single-thread CPU latency at 128 and 224 px.

One process with OMP_NUM_THREADS=1 and one torch thread; batch 1, one gray channel; latency is the median
(and IQR) of --runs timed forward passes after --warmup untimed ones, the two models timed in turn run by
run so that a busy spell of the machine hits both alike. With onnxruntime installed the same models are
also exported to ONNX and timed there (per-operator overhead of eager PyTorch weighs on a small network
at a small input; onnxruntime shows the ratio without most of it).

    python benchmarks/model_efficiency.py
    python benchmarks/model_efficiency.py --student mobilenetv3_small_050 --sizes 128 160 224 --runs 100
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch are imported

import argparse  # noqa: E402
import platform  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from diffkd_study.metrics.efficiency import compare_models, onnxruntime_available  # noqa: E402
from diffkd_study.models.classifier import (  # noqa: E402
    DEFAULT_STUDENT,
    DEFAULT_STUDENT_WEIGHTS,
    DEFAULT_TEACHER,
    DEFAULT_TEACHER_WEIGHTS,
    create_classifier,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", default=DEFAULT_TEACHER)
    parser.add_argument("--teacher-weights", default=DEFAULT_TEACHER_WEIGHTS)
    parser.add_argument("--student", default=DEFAULT_STUDENT)
    parser.add_argument("--student-weights", default=DEFAULT_STUDENT_WEIGHTS)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224], help="square input sizes in px")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30, help="timed passes per model and size (>= 30)")
    parser.add_argument("--no-onnx", action="store_true", help="skip onnxruntime even if it is installed")
    args = parser.parse_args()
    if args.runs < 30:
        parser.error("--runs must be >= 30")
    torch.set_num_threads(1)
    teacher = create_classifier(args.teacher, args.num_classes, args.in_chans, args.teacher_weights)
    student = create_classifier(args.student, args.num_classes, args.in_chans, args.student_weights)
    onnx = onnxruntime_available() and not args.no_onnx

    print(
        f"teacher {args.teacher} ({args.teacher_weights}) vs student {args.student} ({args.student_weights})"
    )
    print(
        f"{args.num_classes} classes, {args.in_chans} input channel(s), batch 1, 1 thread "
        f"(torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores); "
        f"latency: median and IQR of {args.runs} runs after {args.warmup} warm-up runs, interleaved"
    )
    print("FLOPs: matmul/conv only, 2 per multiply-accumulate (MACs = FLOPs / 2)")
    if not onnx:
        print("onnxruntime: not measured (" + ("--no-onnx" if args.no_onnx else "not installed") + ")")
    summary = {}
    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
        for size in args.sizes:
            shape = (1, args.in_chans, size, size)
            table = compare_models(
                teacher, student, shape, threads=1, warmup=args.warmup, runs=args.runs, onnx=onnx
            )
            print(f"\n== {size} x {size} px, input {shape}")
            print(table.to_string())
            summary[f"{size} px"] = table["student_to_teacher"].dropna()
    print("\nstudent / teacher (fractions; 1/8 = 0.125, 1/5 = 0.2)")
    with pd.option_context("display.float_format", "{:.3f}".format):
        print(pd.DataFrame(summary).to_string())


if __name__ == "__main__":
    main()
