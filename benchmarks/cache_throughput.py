"""Images per second iterating ManifestDataset with and without the preprocessing cache.

Single-threaded (OMP_NUM_THREADS=1, one torch thread, no DataLoader workers), both paths in the same
process, each timed over several full passes after one warm-up pass (so the OS file cache is warm for
both and the figure is decode + resize cost against memmap reads). Prints the median and the ratio.

    python benchmarks/cache_throughput.py                         # 400 synthetic 500x400 PNGs
    python benchmarks/cache_throughput.py --manifest data_manifests/bus-bra.csv --root ../shared/data/bus-bra
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch are imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from diffkd_study.data.cache import build_cache  # noqa: E402
from diffkd_study.data.datasets import ManifestDataset  # noqa: E402
from diffkd_study.data.schema import Manifest, ManifestSchema, read_manifest  # noqa: E402


def synthetic_cohort(folder: Path, n: int, width: int, height: int, seed: int = 0) -> Manifest:
    """``n`` ultrasound-like grayscale PNGs: depth gradient, a dark elliptical lesion, speckle noise."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rows = []
    for i in range(n):
        cx, cy = r.uniform(0.3, 0.7) * width, r.uniform(0.3, 0.7) * height
        ax, ay = r.uniform(0.05, 0.2) * width, r.uniform(0.05, 0.2) * height
        lesion = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 < 1
        tissue = 150 - 80 * yy / height + 20 * np.sin(xx / r.uniform(15, 40))
        speckle = r.rayleigh(1.0, (height, width)).astype(np.float32)
        pixels = np.clip(np.where(lesion, 40, tissue) * speckle * 0.8, 0, 255).astype(np.uint8)
        image_path, mask_path = f"images/{i:04d}.png", f"masks/{i:04d}.png"
        for path, array in ((image_path, pixels), (mask_path, lesion.astype(np.uint8) * 255)):
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / path)
        rows.append({"image_id": f"syn{i:04d}", "patient_id": f"p{i:04d}", "dataset": "synthetic",
                     "center": "c1", "image_path": image_path, "mask_path": mask_path,
                     "label": ("benign", "malignant")[i % 2]})
    schema = ManifestSchema(dataset="synthetic", label_set=("benign", "malignant"), positive_class="malignant")
    return Manifest(pd.DataFrame(rows), schema)


def seconds_per_pass(dataset: ManifestDataset, repeats: int) -> list[float]:
    for i in range(len(dataset)):  # warm-up: page cache, lazy imports
        dataset[i]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, help="a manifest CSV (with its sidecar); default: synthetic")
    parser.add_argument("--root", type=Path, help="the manifest's data root")
    parser.add_argument("--n", type=int, default=400, help="synthetic images (default 400)")
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=400)
    parser.add_argument("--size", type=int, default=128, help="training resolution (default 128)")
    parser.add_argument("--mode", choices=("L", "RGB"), default="L")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per path (default 5)")
    parser.add_argument("--build-workers", type=int, default=None, help="threads for the cache build")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="cache_bench_") as tmp:
        tmp_path = Path(tmp)
        if args.manifest is not None:
            if args.root is None:
                parser.error("--manifest needs --root")
            manifest, root = read_manifest(args.manifest), args.root
            source = f"{args.manifest} (root {args.root})"
        else:
            root = tmp_path / "data"
            manifest = synthetic_cohort(root, args.n, args.width, args.height)
            source = f"synthetic: {args.n} grayscale PNGs of {args.width}x{args.height} with masks"

        start = time.perf_counter()
        cache = build_cache(manifest, root, size=args.size, mode=args.mode, cache_dir=tmp_path / "cache",
                            workers=args.build_workers, progress=False)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        build_cache(manifest, root, size=args.size, mode=args.mode, cache_dir=tmp_path / "cache", progress=False)
        reuse_s = time.perf_counter() - start
        cache_mb = sum(p.stat().st_size for p in cache.path.iterdir()) / 1e6

        n = len(manifest.df)
        results = {
            "disk (decode + resize)": seconds_per_pass(
                ManifestDataset(manifest, root, size=args.size, mode=args.mode), args.repeats),
            "cache (memmap)": seconds_per_pass(ManifestDataset(manifest, cache=cache), args.repeats),
        }

    print(f"source: {source}")
    print(f"{n} images at {args.size}x{args.size} {args.mode}; 1 thread; median of {args.repeats} passes "
          f"after 1 warm-up pass")
    print(f"{'path':<24}{'s/pass (median)':>16}{'min':>9}{'max':>9}{'images/s':>11}")
    rates = {}
    for name, times in results.items():
        median = statistics.median(times)
        rates[name] = n / median
        print(f"{name:<24}{median:>16.3f}{min(times):>9.3f}{max(times):>9.3f}{rates[name]:>11.0f}")
    print(f"ratio cache / disk: {rates['cache (memmap)'] / rates['disk (decode + resize)']:.1f}x")
    print(f"cache build (one-off, {args.build_workers or 'default'} threads): {build_s:.2f} s "
          f"({n / build_s:.0f} images/s), {cache_mb:.1f} MB on disk; re-use (key + open): {reuse_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
