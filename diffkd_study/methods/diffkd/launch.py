"""Entry point of a distributed teacher or student stage:
``python -m diffkd_study.methods.diffkd.launch KIND PARAMS.json``.

Launched once per process by ``torchrun`` (or ``accelerate launch``, which sets the same environment
variables), e.g. on one machine with 4 GPUs::

    torchrun --standalone --nproc-per-node 4 -m diffkd_study.methods.diffkd.launch \\
        teacher runs/NAME/teacher/launch.json

or on 2 nodes (run on each, with the rendezvous on the first)::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m diffkd_study.methods.diffkd.launch student runs/NAME/student/launch.json

``PARAMS.json`` holds the stage's notebook parameters (the notebook writes it when its section says
``launcher: torchrun``). The process group uses NCCL on CUDA and gloo on CPU; rank 0 writes every file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from diffkd_study.methods.diffkd.study import run_stage
from diffkd_study.training.distributed import distributed_session


def main(argv: list[str] | None = None) -> int:
    """Run :func:`~diffkd_study.methods.diffkd.study.run_stage` in this process of a distributed launch;
    the exit status (2 for bad arguments)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("teacher", "student"):
        print("usage: python -m diffkd_study.methods.diffkd.launch {teacher|student} PARAMS.json", file=sys.stderr)
        return 2
    params = json.loads(Path(args[1]).read_text(encoding="utf-8"))
    with distributed_session(params.get("device", "auto")):
        run_stage(args[0], params, progress=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
