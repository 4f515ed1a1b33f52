"""Images per second of the built-in phantom cohort on one core.

Single-threaded (OMP_NUM_THREADS=1). Times ``simulate_case`` alone (image formation) and
``generate_phantom_cohort`` end to end (formation + PNG writes + manifest), each as the median of
several runs after a warm-up.

    python benchmarks/phantom_speed.py                    # 128 x 128, 60 cases per run, 5 runs
    python benchmarks/phantom_speed.py --size 256 --n 30
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from diffkd_study.data.phantom import CENTERS, generate_phantom_cohort, simulate_case  # noqa: E402
from diffkd_study.repro import derive_seed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n", type=int, default=60, help="cases per run (spread over the centers)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    centers = list(CENTERS)
    per_center = max(1, args.n // len(centers))
    total = per_center * len(centers)

    simulate_case(0, centers[0], args.size)  # warm-up: imports, font and overlay caches
    sim_rates = []
    for run in range(args.runs):
        start = time.perf_counter()
        for center in centers:
            for i in range(per_center):
                simulate_case(derive_seed(run, center, i), center, args.size)
        sim_rates.append(total / (time.perf_counter() - start))

    cohort_rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            start = time.perf_counter()
            generate_phantom_cohort(Path(tmp) / "cohort", n_per_center=per_center, seed=run, image_size=args.size,
                                    progress=False)
            cohort_rates.append(total / (time.perf_counter() - start))

    print(f"phantom {args.size}x{args.size}, {total} cases per run, {args.runs} runs, 1 thread")
    print(f"simulate_case:           median {statistics.median(sim_rates):7.1f} images/s "
          f"(min {min(sim_rates):.1f}, max {max(sim_rates):.1f})")
    print(f"generate_phantom_cohort: median {statistics.median(cohort_rates):7.1f} images/s "
          f"(min {min(cohort_rates):.1f}, max {max(cohort_rates):.1f}; includes PNG and manifest writes)")


if __name__ == "__main__":
    main()
