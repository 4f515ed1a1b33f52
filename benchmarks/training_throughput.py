"""Training throughput (images/s) of the teacher, the student alone and the distilled student, one CPU thread.

Data: the built-in phantom cohort at the study resolution, read once through the preprocessing cache into
memory (``diffkd_study.training.data.load_images``), so the figure is the cost of augmentation + forward +
backward + optimiser step, not of decoding. Each configuration runs ``--epochs`` epochs of the real
trainer (``trainer.fit``, ultrasound augmentation, batch 16); the first epoch is a warm-up and the
median images/s over the others is printed, with the teacher/student ratios. One process, the
configurations timed in turn.

    python benchmarks/training_throughput.py                 # 128 px, 3 epochs of 96 images
    python benchmarks/training_throughput.py --size 224 --n-per-center 48
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch are imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from diffkd_study.data.phantom import generate_phantom_cohort  # noqa: E402
from diffkd_study.distill.composite import build_loss  # noqa: E402
from diffkd_study.distill.distiller import DistillationTask  # noqa: E402
from diffkd_study.models.classifier import (  # noqa: E402
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    DEFAULT_TEACHER_WEIGHTS,
    create_classifier,
)
from diffkd_study.training.data import load_images  # noqa: E402
from diffkd_study.training.trainer import ClassifierTask, FitConfig, fit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-per-center", type=int, default=32, help="phantom images per center (3 centers)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher", default=DEFAULT_TEACHER)
    parser.add_argument("--student", default=DEFAULT_STUDENT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cohort = generate_phantom_cohort(folder / "cohort", n_per_center=args.n_per_center, seed=0,
                                         image_size=args.size, progress=False)
        data = load_images(cohort, folder / "cohort", size=args.size, cache_dir=folder / "cache")
        val = data.subset(torch.arange(min(16, len(data))))
        config = FitConfig(epochs=args.epochs, batch_size=16, lr=1e-3, weight_decay=1e-4, warmup_epochs=1.0,
                           grad_clip=5.0, patience=0, min_epochs=1, selection="auc", augment="ultrasound", seed=0,
                           device="cpu")
        ce = {"ce": {"type": "ce"}}
        teacher = create_classifier(args.teacher, 2, 1, DEFAULT_TEACHER_WEIGHTS)
        runs = {
            "teacher": lambda: ClassifierTask(teacher, build_loss(ce)),
            "student": lambda: ClassifierTask(create_classifier(args.student, 2, 1, "none"), build_loss(ce)),
            "student + KD": lambda: DistillationTask(
                create_classifier(args.student, 2, 1, "none"), teacher,
                build_loss({"ce": {"type": "ce", "weight": 0.5}, "kd": {"type": "kd", "weight": 0.5}})),
        }
        rates = {}
        for name, make in runs.items():
            result = fit(make(), data, val, config, folder / name.replace(" ", "_").replace("+", ""), progress=False)
            per_epoch = [h["train_images_per_s"] for h in result.history[1:]] or [result.history[0]["train_images_per_s"]]
            rates[name] = statistics.median(per_epoch)
    print(f"training throughput, {args.size} px, batch 16, 1 thread, {len(data)} images/epoch, "
          f"median of {max(1, args.epochs - 1)} epoch(s) after a warm-up:")
    for name, rate in rates.items():
        print(f"  {name:<14} {rate:8.1f} images/s")
    print(f"  student / teacher: {rates['student'] / rates['teacher']:.1f}x faster to train; "
          f"distilled student / teacher: {rates['student + KD'] / rates['teacher']:.1f}x")


if __name__ == "__main__":
    main()
