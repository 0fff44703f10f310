"""Label claims: at most one labelling of a model at a time, across threads and processes.

A claim is two properties of the model's node — `label_claim` (the job id) and
`label_claim_until` (a lease) — granted by one conditional write that first takes the node's
write lock (`cypher/label/claim.cypher`), so two callers, in one process or in several
(replicated ingestion services), never both find the model free. The holder renews the lease
while its job runs and releases the claim when the job ends; a holder that died stops
renewing, and its claim lapses after `LEASE_S`.

The same write says whether a request is already served: a model labelled at or after the
moment the request arrived (`fresh`) needs no new job, relabel or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from mllgraph.errors import NotFound
from mllgraph.graph.db import Graph

LEASE_S = 600  # a live job renews every LEASE_S / 4 (RENEW_S)
RENEW_S = LEASE_S / 4


@dataclass(frozen=True)
class Claim:
    """What the claim write found and did."""

    granted: bool  # the job now holds the model
    busy: bool  # another job held a live claim: `holder`
    labelled: bool  # the model has labels
    fresh: bool  # labelled at or after `since_ms`
    holder: str | None
    labelled_at: str | None


def claim(
    graph: Graph, mid: str, job: str, *, relabel: bool, since_ms: int, lease_s: int = LEASE_S
) -> Claim:
    """Claim `mid` for `job` if it is free and needs labelling (NotFound: no such model)."""
    rows = graph.write(
        "label/claim", id=mid, job=job, lease_s=lease_s, relabel=relabel, since_ms=since_ms
    )
    if not rows:
        raise NotFound(f"model {mid!r} is not registered")
    return Claim(**rows[0])


def renew(graph: Graph, mid: str, job: str, lease_s: int = LEASE_S) -> bool:
    """Extend `job`'s claim; False when it no longer holds the model."""
    return bool(graph.write("label/claim_renew", id=mid, job=job, lease_s=lease_s)[0]["renewed"])


def release(graph: Graph, mid: str, job: str) -> None:
    graph.write("label/claim_release", id=mid, job=job)
