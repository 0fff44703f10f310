"""A head combination: the chosen heads per class, the rule's parameters and the estimate
on the probes — what CHCO returns and what a plan document carries under ``combination``.

Pure: no I/O. Kept apart from `mllgraph.select.chco` (the search) because the plan contract
and inference read it without searching.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph.combine.rule import ClassAssignment, CombinationParams
from mllgraph.errors import InvalidArgument


@dataclass(frozen=True, eq=False)
class Plan:
    """The chosen heads per class, the rule's parameters and the estimate on the probes.

    ``per_class_accuracy`` is recall per class; for a class without probe images it is the
    prior (its group's label score) when covered, else NaN (``None`` in JSON).
    ``estimated_accuracy`` weighs both (see the module doc); ``measured_fraction`` is the share
    of it that rests on probe images (1.0: all measured). ``evaluated`` counts assignments
    (exact) or option evaluations (heuristic).
    """

    assignment: list[ClassAssignment]
    params: CombinationParams
    estimated_accuracy: float
    per_class_accuracy: list[float]
    uncovered: list[int]
    models: list[str]
    solver: str
    evaluated: int
    measured_fraction: float = 1.0

    @property
    def balanced_accuracy(self) -> float:
        vals = [x for x in self.per_class_accuracy if not math.isnan(x)]
        return float(np.mean(vals)) if vals else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "assignment": [a.to_dict() for a in self.assignment],
            "params": self.params.to_dict(),
            "estimated_accuracy": self.estimated_accuracy,
            "per_class_accuracy": [None if math.isnan(x) else x for x in self.per_class_accuracy],
            "uncovered": list(self.uncovered),
            "models": list(self.models),
            "solver": self.solver,
            "evaluated": self.evaluated,
            "measured_fraction": self.measured_fraction,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        keys = ("assignment", "params", "estimated_accuracy", "per_class_accuracy")
        keys += ("uncovered", "models", "solver", "evaluated")
        if not isinstance(d, Mapping):
            raise InvalidArgument("Plan must be an object")
        for key in keys:
            if key not in d:
                raise InvalidArgument(f"Plan.{key} is missing")
        return cls(
            assignment=[ClassAssignment.from_dict(a) for a in d["assignment"]],
            params=CombinationParams.from_dict(d["params"]),
            estimated_accuracy=float(d["estimated_accuracy"]),
            per_class_accuracy=[
                float("nan") if x is None else float(x) for x in d["per_class_accuracy"]
            ],
            uncovered=[int(c) for c in d["uncovered"]],
            models=[str(m) for m in d["models"]],
            solver=str(d["solver"]),
            evaluated=int(d["evaluated"]),
            measured_fraction=float(d.get("measured_fraction", 1.0)),  # absent: older plans
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Plan):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
