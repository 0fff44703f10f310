"""How long stored plans are kept: SelectHeads stores every distinct plan as a (:Plan) node,
so the store is bounded by count and by age (MLLGRAPH_PLAN_MAX_COUNT, MLLGRAPH_PLAN_MAX_AGE_S).

`evict_plans` deletes every plan beyond the newest `plan_max_count` and every plan created
more than `plan_max_age_s` ago (0: no age limit). The selection service runs it at start,
every `sweep_interval(settings)` seconds and after SelectHeads calls (at most once per
AFTER_SELECT_S), so the store holds at most `plan_max_count` plus the plans stored since the
last sweep. An evicted plan answers NOT_FOUND (GetPlan, ExplainSelection, Classify by id on
an inference server that has not cached it): select again, which stores it anew under the
same id when the inputs and the catalogue are unchanged.
"""

from __future__ import annotations

from mllgraph.graph.db import Graph
from mllgraph.settings import Settings

AFTER_SELECT_S = 5.0  # at most one sweep per this many seconds after SelectHeads
MAX_SWEEP_S = 60.0


def evict_plans(graph: Graph, settings: Settings) -> int:
    """Delete the plans over the limits; how many were deleted."""
    age = settings.plan_max_age_s
    rows = graph.write(
        "select/plans_evict",
        max_count=max(0, int(settings.plan_max_count)),
        max_age_s=float(age) if age > 0 else None,
    )
    return int(rows[0]["evicted"]) if rows else 0


def sweep_interval(settings: Settings) -> float:
    """Seconds between background sweeps: a tenth of the age limit, at most MAX_SWEEP_S."""
    age = settings.plan_max_age_s
    return min(MAX_SWEEP_S, age / 10) if age > 0 else MAX_SWEEP_S
