"""A weighted sum of named loss terms that reports every term (torchdistill + mdistiller conventions).

``CompositeLoss({name: (weight, module)})`` or ``{name: (weight, module, inputs)}``: calling it with
one context of named tensors returns ``(total, terms)`` where ``total`` is the differentiable
``sum_i weight_i * loss_i`` and ``terms`` maps each name to the detached float of its weighted
value, each part of a multi-part loss to ``"name.part"``, and ``"total"`` to the total.

Each module receives the context entries named like its ``forward`` (or, for a
:class:`~diffkd_study.distill.losses.MultiTermLoss`, ``terms``) parameters; ``inputs`` renames them
(``{"student_feature": "student_layer3"}`` feeds context key ``student_layer3`` to parameter
``student_feature``). A missing required input is an error that names the term and the key;
parameters with defaults are simply left out. A term with weight 0 is not computed and reports 0.

``build_loss(cfg)`` builds the composite from a config mapping (YAML-friendly)::

    ce:  {type: ce, weight: 0.1}
    kd:  {type: kd, weight: 0.9, params: {temperature: 4.0}}
    hint: {type: fitnet, weight: 100, params: {student_channels: 96, teacher_channels: 512},
           inputs: {student_feature: student_blocks5, teacher_feature: teacher_layer4}}

Every registered loss (``LOSSES.names()``; :mod:`diffkd_study.loss_catalog` registers them all) can be
used; modules that cannot be written in a config (a trained SS head, an adapter from ``build_adapter``)
go in ``extra_params``. ``describe_objective(cfg)`` says the same config in words for report prose
(``"0.1 x cross-entropy + 0.9 x T^2 KL (Hinton KD, T = 4.0) + ..."``) from the registered descriptions.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from diffkd_study.distill.losses import LOSSES, MultiTermLoss, describe_loss

__all__ = ["CompositeLoss", "build_loss", "describe_objective", "loss_inputs", "term_class"]

_CONFIG_KEYS = {"type", "weight", "params", "inputs"}


def _call_parameters(loss_class: type[nn.Module]) -> list[inspect.Parameter]:
    """The named parameters of the loss call (``terms`` of a MultiTermLoss, else ``forward``), without ``self``."""
    call = loss_class.terms if issubclass(loss_class, MultiTermLoss) else loss_class.forward
    return [
        p
        for p in list(inspect.signature(call).parameters.values())[1:]
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def loss_inputs(loss_class: type[nn.Module], inputs: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The context keys a loss class reads: its call's parameter names, renamed by ``inputs`` as in a config.

    This is what a loss declares it needs: ``student_feature`` means the student's hooked ``feature``.
    """
    inputs = inputs or {}
    return tuple(inputs.get(p.name, p.name) for p in _call_parameters(loss_class))


def _routing(name: str, module: nn.Module, inputs: Mapping[str, str]) -> list[tuple[str, str, bool]]:
    """(parameter, context key, required) for each named parameter of the module's loss call."""
    parameters = _call_parameters(type(module))
    names = {p.name for p in parameters}
    unknown = sorted(set(inputs) - names)
    if unknown:
        raise ValueError(
            f"loss term {name!r} ({type(module).__name__}) has no input(s) {unknown}; its inputs are {sorted(names)}"
        )
    return [(p.name, inputs.get(p.name, p.name), p.default is inspect.Parameter.empty) for p in parameters]


class CompositeLoss(nn.Module):
    """Weighted sum of named loss modules; see the module docstring.

    Args:
        terms: ``{name: (weight, module)}`` or ``{name: (weight, module, {parameter: context_key})}``.
            Names may not contain ``"."`` (used for the parts of multi-part losses).

    ``last_stats`` collects the modules' diagnostics (``"name.stat"``) from the latest call.
    """

    def __init__(self, terms: Mapping[str, tuple]):
        super().__init__()
        if not terms:
            raise ValueError("CompositeLoss needs at least one term")
        self.losses = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        self._routes: dict[str, list[tuple[str, str, bool]]] = {}
        for name, spec in terms.items():
            if "." in name or not name:
                raise ValueError(f"loss term names must be non-empty and contain no '.'; got {name!r}")
            if not isinstance(spec, tuple | list) or len(spec) not in (2, 3):
                raise ValueError(
                    f"loss term {name!r} must be (weight, module) or (weight, module, inputs); got {spec!r}"
                )
            weight, module, *rest = spec
            if not isinstance(module, nn.Module):
                raise TypeError(f"loss term {name!r}: expected an nn.Module, got {type(module).__name__}")
            self.losses[name] = module
            self.weights[name] = float(weight)
            self._routes[name] = _routing(name, module, dict(rest[0]) if rest else {})
        self.last_stats: dict[str, float] = {}

    def _arguments(self, name: str, context: Mapping[str, Any]) -> dict[str, Any]:
        arguments = {}
        for parameter, key, required in self._routes[name]:
            if key in context:
                arguments[parameter] = context[key]
            elif required:
                raise KeyError(
                    f"loss term {name!r} ({type(self.losses[name]).__name__}) needs {parameter!r} from context key "
                    f"{key!r}; the context has {sorted(context)}"
                )
        return arguments

    def forward(
        self, context: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted total and the logged terms for one ``context`` of named tensors (``kwargs`` are added to it).

        Returns ``(total, terms)``: ``total`` the differentiable weighted sum, ``terms`` the detached float of every
        weighted term, of each part ``"name.part"`` of a multi-part loss and ``"total"``; each term's ``last_stats``
        go to ``self.last_stats`` as ``"name.stat"``. Raises ``KeyError`` for a missing required input and
        ``ValueError`` when every term has weight 0.
        """
        context = {**(context or {}), **kwargs}
        total: torch.Tensor | None = None
        logged: dict[str, float] = {}
        stats: dict[str, float] = {}
        for name, module in self.losses.items():
            weight = self.weights[name]
            if weight == 0:
                logged[name] = 0.0
                continue
            arguments = self._arguments(name, context)
            if isinstance(module, MultiTermLoss):
                parts = module.terms(**arguments)
                value = torch.stack(list(parts.values())).sum()
                for part, part_value in parts.items():
                    logged[f"{name}.{part}"] = weight * float(part_value.detach())
            else:
                value = module(**arguments)
            weighted = weight * value
            logged[name] = float(weighted.detach())
            total = weighted if total is None else total + weighted
            for stat, stat_value in getattr(module, "last_stats", {}).items():
                stats[f"{name}.{stat}"] = float(stat_value)
        if total is None:
            raise ValueError("every loss term has weight 0; nothing to optimise")
        logged["total"] = float(total.detach())
        self.last_stats = stats
        return total, logged


def term_class(name: str, spec: Any) -> type[nn.Module]:
    """The registered loss class of one config term ``{type, weight, params, inputs}``, its keys checked."""
    if not isinstance(spec, Mapping):
        raise TypeError(f"loss term {name!r}: expected a mapping with 'type', got {type(spec).__name__}")
    unknown = sorted(set(spec) - _CONFIG_KEYS)
    if unknown:
        raise ValueError(f"loss term {name!r}: unknown key(s) {unknown}; allowed: {sorted(_CONFIG_KEYS)}")
    if "type" not in spec:
        raise ValueError(f"loss term {name!r} has no 'type'; registered losses: {', '.join(LOSSES.names())}")
    return LOSSES.get(spec["type"])


def describe_objective(cfg: Mapping[str, Mapping[str, Any]]) -> str:
    """A :func:`build_loss` config in words: ``weight x description`` of each term, joined by ``+``.

    Each description is the registered loss's template filled with the term's ``params``
    (:func:`~diffkd_study.distill.losses.describe_loss`); a weight of 1 is left out.
    """
    parts = []
    for name, spec in cfg.items():
        text = describe_loss(term_class(name, spec), spec.get("params"))
        weight = spec.get("weight", 1.0)
        parts.append(text if weight == 1 else f"{weight} x {text}")
    return " + ".join(parts)


def build_loss(
    cfg: Mapping[str, Mapping[str, Any]], extra_params: Mapping[str, Mapping[str, Any]] | None = None
) -> CompositeLoss:
    """A :class:`CompositeLoss` from ``{name: {type, weight=1.0, params={}, inputs={}}}``.

    ``type`` is a registered loss name; ``params`` are its constructor arguments; ``inputs`` renames
    context keys; ``extra_params[name]`` adds constructor arguments that are objects (modules).

    Raises ``KeyError`` for an unknown ``type`` (naming the registered losses), ``ValueError`` for an unknown
    key of a term, a term without ``type``, or ``extra_params`` naming a term the config lacks, and
    ``TypeError`` (with the loss's signature) when its constructor rejects the arguments.
    """
    extra_params = extra_params or {}
    unknown_extra = sorted(set(extra_params) - set(cfg))
    if unknown_extra:
        raise ValueError(f"extra_params name terms that are not in the config: {unknown_extra}")
    terms = {}
    for name, spec in cfg.items():
        loss_class = term_class(name, spec)
        params = {**dict(spec.get("params") or {}), **dict(extra_params.get(name, {}))}
        try:
            module = loss_class(**params)
        except TypeError as err:
            raise TypeError(
                f"loss term {name!r} ({spec['type']}): {err}; accepted arguments: {inspect.signature(loss_class)}"
            ) from err
        terms[name] = (float(spec.get("weight", 1.0)), module, dict(spec.get("inputs") or {}))
    return CompositeLoss(terms)
