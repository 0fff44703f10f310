"""What a selection request asks for: the task's classes and the options of the search.

Part of the plan contract: a plan's id is derived from them (`document.plan_id_for`), so
selection (which reads them) and the plan document share this module. Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mllgraph.errors import InvalidArgument

SOLVERS = ("auto", "exact", "heuristic")
# Serve the cheapest plan (ms per image) whose estimated accuracy is within this of the best
# plan's estimate: 0.005 = half a point of accuracy.
ACCURACY_SLACK = 0.005


@dataclass(frozen=True)
class TaskClass:
    name: str
    pinned_wnid: str | None = None


@dataclass(frozen=True)
class SelectOptions:
    budget: int = 5  # max distinct models run at inference
    solver: str = "auto"
    allow_ancestor: bool = True
    fit_params: bool = True
    min_label_score: float = 0.05
    per_kind_limit: int = 12  # candidates per class per kind, best first
    ancestor_discount: float = 0.5
    related_discount: float = 0.4
    # The prior quality (expected accuracy) of a declared, unmeasured head whose model states
    # no top-1 accuracy (RegisterModel.top1_accuracy; the builtins state their own).
    declared_prior: float = 0.5
    # Restrict candidates to these model ids (None: the whole hub). Used to study hub size.
    models: tuple[str, ...] | None = None
    # Cap on the plan's compute: the sum of its models' cost, ms per image (0: no cap).
    max_cost_ms: float = 0.0
    # The served plan: the cheapest within this of the best estimate (0: the most accurate).
    accuracy_slack: float = ACCURACY_SLACK

    def validate(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise InvalidArgument(f"budget must be a positive number of models, got {self.budget}")
        if self.solver not in SOLVERS:
            raise InvalidArgument(f"solver {self.solver!r}: one of {', '.join(SOLVERS)}")
        if not 0.0 <= self.min_label_score <= 1.0:
            raise InvalidArgument(f"min_label_score must be in [0, 1], got {self.min_label_score}")
        if not 0.0 <= self.declared_prior <= 1.0:
            raise InvalidArgument(f"declared_prior must be in [0, 1], got {self.declared_prior}")
        if not 1 <= self.per_kind_limit <= 1000:
            raise InvalidArgument(f"per_kind_limit must be 1..1000, got {self.per_kind_limit}")
        for name in ("ancestor_discount", "related_discount"):
            # A discount scales a label score; at 0 every such head would rank alike (and the
            # per-model merge of `select.per_kind` relies on it keeping the scores' order).
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and 0.0 < value <= 1.0):
                raise InvalidArgument(f"{name} must be in (0, 1], got {value!r}")
        cap = self.max_cost_ms
        if isinstance(cap, bool) or not isinstance(cap, int | float):
            raise InvalidArgument(f"max_cost_ms must be a number of ms per image, got {cap!r}")
        if not (math.isfinite(cap) and cap >= 0):
            raise InvalidArgument(
                f"max_cost_ms must be a finite number of ms per image >= 0 (0: no cap), got {cap}"
            )
        slack = self.accuracy_slack
        if isinstance(slack, bool) or not isinstance(slack, int | float):
            raise InvalidArgument(f"accuracy_slack must be a number in [0, 1], got {slack!r}")
        if not (math.isfinite(slack) and 0.0 <= slack <= 1.0):
            raise InvalidArgument(
                f"accuracy_slack must be in [0, 1] (0.005 = half a point), got {slack}"
            )

    @property
    def cost_cap(self) -> float | None:
        """`max_cost_ms` as CHCO takes it: None when there is no cap."""
        return float(self.max_cost_ms) if self.max_cost_ms > 0 else None


@dataclass
class Timings:
    grounding_ms: float = 0.0
    cypher_ms: float = 0.0
    load_ms: float = 0.0
    chco_ms: float = 0.0
    stacked_ms: float = 0.0
    none_ms: float = 0.0  # the "none of these" calibration (select/none_calibration)
    total_ms: float = 0.0
