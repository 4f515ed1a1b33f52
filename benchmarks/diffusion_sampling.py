"""Sampler speed and quality: DDPM-1000, DDIM-50 and DPM-Solver++ 20 / 10 on one model and resolution;
training throughput.

Every sampler gets the same conditions (and masks), drawn from the training rows of ``--manifest``,
the same guidance scale and the same seed (so the same initial noise). Reported per sampler: seconds per
image (wall time of the sampling loop / n, batch ``--batch-size``), the speed-up over DDPM-1000, and,
with ``--reference-split``, FID and KID (mean +- SD) against the real images of that split with both
extractors (TF-Inception and EfficientNet-Lite0), with the sample sizes. The target of issue 3:
DPM-Solver++ 20 at least 40x faster than DDPM-1000 with an FID within 10% of DDPM-1000's.

Without ``--checkpoint`` an untrained model of ``--profile`` (label-conditioned only) is timed (speed
only). ``--train-steps K`` also times K training steps of the checkpoint's training configuration on
the training rows (images/s; the first step is excluded as warm-up).

    python benchmarks/diffusion_sampling.py --profile demo --n 4 --skip-ddpm
    python benchmarks/diffusion_sampling.py --checkpoint runs/busbra/diffusion/checkpoint-012000 \\
        --manifest runs/busbra/data/study.csv --root ../shared/data --reference-split test --n 100 \\
        --train-steps 20 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffkd_study.methods.diffkd.diffusion.conditioning import EncoderSpec
from diffkd_study.methods.diffkd.diffusion.sample import _load_masks, draw_conditions, sample_images
from diffkd_study.methods.diffkd.diffusion.train import (
    TrainConfig,
    load_model,
    make_noise_scheduler,
    read_checkpoint_config,
)
from diffkd_study.methods.diffkd.diffusion.unet import create_conditional_unet, unet_profile

SETTINGS = (("ddpm", 1000), ("ddim", 50), ("dpmsolver++", 20), ("dpmsolver++", 10))
TARGET_SPEEDUP = 40.0
TARGET_FID_RATIO = 0.10


def training_throughput(checkpoint: str, manifest, root: str | None, steps: int) -> dict:
    """Images/s of ``steps`` training steps with the checkpoint's configuration (fresh weights)."""
    from diffkd_study.methods.diffkd.diffusion.train import train_diffusion

    config = TrainConfig.from_dict(read_checkpoint_config(checkpoint)["train"])
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        warm = replace(config, max_steps=1, checkpoint_every=1)
        began = time.perf_counter()
        train_diffusion(manifest, Path(tmp) / "warm", warm, root=root, progress=False)
        timings["one_step_with_loading_s"] = time.perf_counter() - began
        timed = replace(config, max_steps=steps + 1, checkpoint_every=steps + 1)
        result = train_diffusion(manifest, Path(tmp) / "timed", timed, root=root, progress=False)
    return {"steps": steps + 1, "batch_size": config.batch_size, "images_per_second": result.images_per_second,
            "torch_threads": torch.get_num_threads(), **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--profile", default="smoke", help="UNet profile when no checkpoint is given")
    parser.add_argument("--manifest", help="study manifest (split column): conditions from its train rows")
    parser.add_argument("--root", help="data folder of --manifest")
    parser.add_argument("--reference-split", help="real images of these splits (comma-separated) for FID/KID "
                                                  "(needs --checkpoint)")
    parser.add_argument("--n", type=int, default=4, help="images per sampler")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-ddpm", action="store_true", help="leave out DDPM-1000 (slow on a CPU)")
    parser.add_argument("--train-steps", type=int, default=0, help="also time this many training steps")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    manifest = None
    if args.manifest:
        from diffkd_study.data.schema import read_manifest

        manifest = read_manifest(args.manifest)
    if args.checkpoint:
        model, config = load_model(args.checkpoint)
        scheduler_config, size = config["noise_scheduler"], int(config["train"]["image_size"])
    else:
        torch.manual_seed(0)
        model = create_conditional_unet(args.profile, EncoderSpec(label_set=["benign", "malignant"])).eval()
        size = unet_profile(args.profile).image_size
        scheduler_config = dict(make_noise_scheduler(TrainConfig(profile=args.profile, image_size=size)).config)
    uses_conditions = bool(model.encoder.categorical_names or model.encoder.numeric_names or model.mask_conditioning)
    if manifest is not None:
        table = draw_conditions(manifest, n=args.n, seed=args.seed)
    elif uses_conditions:
        parser.error("this checkpoint uses conditions or masks: give --manifest (and --root) to draw them from")
    else:
        table = pd.DataFrame({"label": [("benign", "malignant")[i % 2] for i in range(args.n)]})
    masks, has_mask = (_load_masks(table, args.root, None, size) if model.mask_conditioning
                       else (None, np.zeros(len(table), bool)))
    conditions = model.encoder.encode_rows(table, has_mask=has_mask)

    reference = None
    if args.reference_split:
        if not (args.checkpoint and manifest is not None):
            parser.error("--reference-split needs --checkpoint and --manifest")
        from diffkd_study.methods.diffkd.diffusion.quality import EXTRACTORS, load_image_set

        reference = load_image_set(manifest, args.root, size, name="reference",
                                   splits=args.reference_split.split(","))
        for extractor in EXTRACTORS.values():
            reference.ensure_features(extractor)

    rows = []
    for sampler, steps in SETTINGS:
        if sampler == "ddpm" and args.skip_ddpm:
            continue
        began = time.perf_counter()
        images = sample_images(model, scheduler_config, conditions, masks, image_size=size, sampler=sampler,
                               steps=steps, guidance_scale=args.guidance, seed=args.seed,
                               batch_size=args.batch_size, device=device, progress=True)
        row = {"sampler": f"{sampler}-{steps}", "s_per_image": (time.perf_counter() - began) / args.n, "n": args.n}
        if reference is not None:
            from diffkd_study.methods.diffkd.diffusion.quality import EXTRACTORS
            from diffkd_study.metrics.fidelity import extract_features, fidelity_from_features

            for label, extractor in EXTRACTORS.items():
                short = "inception" if "Inception" in label else "domain"
                result = fidelity_from_features(extract_features(images, extractor), reference.features[extractor],
                                                kid_subsets=100)
                row.update({f"fid_{short}": result["fid"], f"kid_{short}": result["kid_mean"],
                            f"kid_sd_{short}": result["kid_std"], "n_reference": result["n_real"]})
        rows.append(row)
        print(json.dumps(row), flush=True)

    base = next((r for r in rows if r["sampler"] == "ddpm-1000"), None)
    for row in rows:
        row["speedup_vs_ddpm1000"] = base["s_per_image"] / row["s_per_image"] if base else None
        if base and "fid_inception" in row:
            row["fid_inception_rel_diff_vs_ddpm"] = (row["fid_inception"] - base["fid_inception"]) / base["fid_inception"]
            row["fid_domain_rel_diff_vs_ddpm"] = (row["fid_domain"] - base["fid_domain"]) / base["fid_domain"]
    result = {"model": args.checkpoint or f"untrained {args.profile}", "image_size": size, "guidance": args.guidance,
              "batch_size": args.batch_size, "device": device, "torch_threads": torch.get_num_threads(), "rows": rows}
    if args.train_steps:
        if not (args.checkpoint and manifest is not None):
            parser.error("--train-steps needs --checkpoint and --manifest")
        result["training"] = training_throughput(args.checkpoint, manifest, args.root, args.train_steps)

    print(f"\nmodel: {result['model']}, {size} px, n={args.n} per sampler, batch {args.batch_size}, guidance "
          f"{args.guidance}, device {device}, torch threads {torch.get_num_threads()}"
          + (f"; reference: {args.reference_split} split, n={rows[0].get('n_reference')}" if reference else ""))
    header = f"{'sampler':<16}{'s/image':>10}{'speed-up':>10}"
    if reference is not None:
        header += f"{'FID-Incep':>11}{'KID-Incep (mean+-SD)':>24}{'FID-domain':>12}{'KID-domain (mean+-SD)':>25}"
    print(header)
    for r in rows:
        speed = f"{r['speedup_vs_ddpm1000']:.1f}x" if r["speedup_vs_ddpm1000"] else "-"
        line = f"{r['sampler']:<16}{r['s_per_image']:>10.3f}{speed:>10}"
        if "fid_inception" in r:
            line += (f"{r['fid_inception']:>11.2f}{r['kid_inception']:>14.4f} +- {r['kid_sd_inception']:.4f}"
                     f"{r['fid_domain']:>12.2f}{r['kid_domain']:>15.4f} +- {r['kid_sd_domain']:.4f}")
        print(line)
    dpm20 = next((r for r in rows if r["sampler"] == "dpmsolver++-20"), None)
    if base and dpm20:
        fast = dpm20["speedup_vs_ddpm1000"] >= TARGET_SPEEDUP
        verdict = f"DPM-Solver++ 20 is {dpm20['speedup_vs_ddpm1000']:.1f}x faster than DDPM-1000 (target >= 40x: " \
                  f"{'met' if fast else 'not met'})"
        if "fid_inception_rel_diff_vs_ddpm" in dpm20:
            close = abs(dpm20["fid_inception_rel_diff_vs_ddpm"]) <= TARGET_FID_RATIO
            verdict += (f"; Inception FID {100 * dpm20['fid_inception_rel_diff_vs_ddpm']:+.1f}% vs DDPM-1000 "
                        f"(target within 10%: {'met' if close else 'not met'})")
        print(verdict)
        result["verdict"] = verdict
    if "training" in result:
        t = result["training"]
        print(f"training throughput: {t['images_per_second']:.1f} images/s (batch {t['batch_size']}, "
              f"{t['steps']} steps, {t['torch_threads']} torch threads)")
    if args.out:
        from diffkd_study.io import write_json

        write_json(args.out, result)


if __name__ == "__main__":
    main()
