"""CoMoTo training cost: seconds per optimiser step of each training variant, and the study's projected wall time.

Times ``--steps`` steps (after one untimed warm-up step) of the detection loss alone, + ImPA (teacher),
+ LsKD and + image-level KD (student, with the frozen teacher's forward pass on a mammography batch),
and inference per image, at the settings of a profile of a study config. The images are synthetic (bright
squares on noise at the profile's input size): the cost of a step does not depend on the pixels. The
projection multiplies the measured step times by the steps the study will run (the budget rule of
``diffkd_study.methods.comoto.stage``) for the given dataset sizes (defaults: BCS-DBT slices, 5 folds; mini-MIAS).
This is how the ``cpu`` profile of ``configs/comoto_dbt.yaml`` was sized.

    OMP_NUM_THREADS=1 python benchmarks/comoto_step_time.py
    python benchmarks/comoto_step_time.py --profile full --steps 5 --threads 8
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
import torch

from diffkd_study.config import load_config
from diffkd_study.devices import resolve_device
from diffkd_study.methods.comoto.cv import regime_name
from diffkd_study.methods.comoto.data import DetectionData, letterbox
from diffkd_study.methods.comoto.detector import DetectorSpec, create_detector
from diffkd_study.methods.comoto.lesion import ImageLevelKDLoss, ImPALoss, LesionKDLoss
from diffkd_study.methods.comoto.stage import METHODS, SETTINGS, ComotoStageConfig
from diffkd_study.methods.comoto.train import Distillation, fit_detector, predict, steps_for
from diffkd_study.sections import parse_section, section_parameters


def synthetic_set(n: int, size: int, seed: int) -> DetectionData:
    """``n`` square images of ``size`` px holding one bright box each (stored frame = network frame)."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(60, 12, (n, size, size)).clip(0, 255).astype(np.uint8)
    boxes = []
    for i in range(n):
        side = int(rng.integers(size // 16, size // 6))
        x, y = rng.integers(0, size - side, 2)
        pixels[i, y: y + side, x: x + side] = 220
        boxes.append(np.array([[x, y, x + side, y + side]], dtype=np.float64))
    return DetectionData(
        source="synthetic", image_size=size, image_ids=np.array([f"s{i}" for i in range(n)]),
        patient_ids=np.array([f"p{i}" for i in range(n)]), labels=np.array(["benign"] * n), boxes=boxes,
        letterboxes=[letterbox(size, size, size)] * n, min_distance=np.full(n, 10.0), pixels=pixels,
        positions=np.arange(n),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/comoto_dbt.yaml")
    parser.add_argument("--profile", choices=["cpu", "full"], default=None, help="default: the config's profile")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dbt-images", type=int, default=109, help="DBT slices (all patients)")
    parser.add_argument("--mammo-images", type=int, default=318, help="mammograms with a box or normal")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    section: ComotoStageConfig = load_config(args.config).section("comoto_dbt")
    if args.profile and args.profile != section.profile:  # the other profile's preset, the config's other keys
        given = {k: v for k, v in section_parameters(section).items() if k not in SETTINGS and k != "profile"}
        section = parse_section({**given, "profile": args.profile}, ComotoStageConfig, "--profile")
    profile = section
    device = resolve_device(section.device)
    spec = DetectorSpec(**profile.detector_fields())
    data = synthetic_set(max(8, 2 * profile.batch_size), profile.detector_image_size, 0)
    torch.manual_seed(0)
    teacher = create_detector(spec)
    grid = (profile.detector_image_size // teacher.backbone.stride) ** 2
    variants = {
        "detection": {},
        "detection + ImPA (teacher)": {"impa": ImPALoss(seed=0)},
        "detection + LsKD (student)": {"kd": (LesionKDLoss(), "lskd")},
        "detection + image-level KD": {"kd": (ImageLevelKDLoss(grid, grid), "image_kd")},
    }
    rows = []
    for name, extra in variants.items():
        model = create_detector(spec)
        distill = None
        if "kd" in extra:
            distill = Distillation(create_detector(spec), data, extra["kd"][0], extra["kd"][1], seed=1)
        history = fit_detector(model, data, steps=args.steps + 1, config=profile, seed=0, device=device,
                               impa=extra.get("impa"), distill=distill, progress=False)
        seconds = history["seconds"].to_numpy()[1:]
        rows.append({"variant": name, "median s/step": float(np.median(seconds)),
                     "IQR s/step": float(np.subtract(*np.percentile(seconds, [75, 25]))), "steps timed": len(seconds)})
    started = time.perf_counter()
    predict(model, data, device)
    per_image = (time.perf_counter() - started) / len(data)
    table = pd.DataFrame(rows).set_index("variant")
    print(f"profile {args.profile or section.profile}: {spec.backbone} stage {spec.feature_stage}, "
          f"{profile.detector_image_size} px, batch {profile.batch_size}, {args.threads} thread(s), device {device}")
    print(table.round(3).to_string())
    print(f"inference: {per_image:.3f} s per image")

    step = table["median s/step"]
    teacher_train = round(args.mammo_images * (1 - section.teacher_holdout_frac))
    teacher_steps = steps_for(teacher_train, profile.batch_size, profile.teacher_epochs, profile.teacher_min_steps)
    projection = [{"part": "teacher (plain)", "steps": teacher_steps, "seconds": teacher_steps * step["detection"]},
                  {"part": "teacher (impa)", "steps": teacher_steps,
                   "seconds": teacher_steps * step["detection + ImPA (teacher)"]}]
    train_images = args.dbt_images * (section.folds - 1) / section.folds
    key = {"none": "detection", "lskd": "detection + LsKD (student)", "image": "detection + image-level KD"}
    for regime in section.regimes:
        n = max(1, round(regime * train_images))
        steps = steps_for(n, profile.batch_size, profile.student_epochs, profile.student_min_steps)
        for method in section.methods:
            projection.append({"part": f"students {regime_name(regime)} {method}", "steps": steps * section.folds,
                               "seconds": steps * section.folds * step[key[METHODS[method].kd]]})
    projected = pd.DataFrame(projection)
    inference = args.dbt_images * len(section.regimes) * len(section.methods) * per_image
    total = projected["seconds"].sum() + inference
    print(projected.assign(minutes=projected["seconds"] / 60).round(1).to_string(index=False))
    print(f"projected training + inference wall time: {total / 3600:.2f} h "
          f"({math.ceil(train_images)} DBT training slices per fold at 100%, {teacher_train} teacher images)")


if __name__ == "__main__":
    main()
