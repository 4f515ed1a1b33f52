"""Coverage of 95% AUC intervals with 2 images per patient: per image (DeLong) vs patient-clustered (Obuchowski).

The simulation of :mod:`diffkd_study.metrics.coverage` (binormal scores, a patient effect of variance
``rho``, a second model correlated 0.7 with the first and the same true AUC), at 100 patients per test
set, for each within-patient correlation given; prints the share of test sets whose interval covered
the true AUC (single) or a difference of 0 (paired).

    python benchmarks/clustered_auc_coverage.py                  # rho 0.5 and 0.8, 4000 test sets each
    python benchmarks/clustered_auc_coverage.py --rho 0.2 --replicates 1000
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import time  # noqa: E402

from diffkd_study.metrics.coverage import interval_coverage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rho", type=float, nargs="+", default=[0.5, 0.8])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--images-per-patient", type=int, default=2)
    parser.add_argument("--replicates", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("rho  | single per image | single clustered | paired per image | paired clustered | seconds")
    for rho in args.rho:
        started = time.perf_counter()
        res = interval_coverage(args.patients, args.images_per_patient, rho, n_replicates=args.replicates,
                                seed=args.seed)
        print(f"{rho:4.2f} | {res.single_per_image:16.3f} | {res.single_clustered:16.3f} | "
              f"{res.paired_per_image:16.3f} | {res.paired_clustered:16.3f} | {time.perf_counter() - started:7.1f}")


if __name__ == "__main__":
    main()
