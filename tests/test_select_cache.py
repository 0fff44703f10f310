"""Selection's caches: the per-catalogue-version cache of graph reads (`mllgraph.select.cache`,
its bound and invalidation; plans made through it on a real graph are in test_selection.py)
and the softmax row statistics that let CHCO read only a candidate's heads (same values)."""

from __future__ import annotations

import numpy as np
import pytest

from mllgraph.combine import rule
from mllgraph.combine.rule import HeadGroup
from mllgraph.select import chco
from mllgraph.select.cache import MISSING, CatalogueCache


def test_entries_live_for_one_version() -> None:
    cache = CatalogueCache(10)
    cache.at(3)
    cache.put(3, "a", [1])
    assert cache.get(3, "a") == [1]
    assert cache.get(4, "a") is MISSING  # a request at another version never sees it
    cache.at(4)  # the catalogue moved on: everything read at 3 is gone
    assert len(cache) == 0
    assert cache.get(3, "a") is MISSING


def test_a_read_from_an_older_version_is_not_kept() -> None:
    cache = CatalogueCache(10)
    cache.at(5)
    cache.put(4, "late", [0])  # a slow request that read version 4 before the bump
    assert cache.get(5, "late") is MISSING and len(cache) == 0


def test_least_recently_used_entries_go_first() -> None:
    cache = CatalogueCache(3)
    cache.at(1)
    for key in "abc":
        cache.put(1, key, key)
    assert cache.get(1, "a") == "a"  # a is now the most recent
    cache.put(1, "d", "d")
    assert len(cache) == 3
    assert cache.get(1, "b") is MISSING
    assert [cache.get(1, k) for k in "acd"] == ["a", "c", "d"]


def test_capacity_zero_keeps_nothing() -> None:
    cache = CatalogueCache(0)
    cache.at(1)
    cache.put(1, "a", [1])
    assert not cache.enabled and cache.get(1, "a") is MISSING


# --- softmax row statistics: a candidate's evidence from its own heads only ---------------------


@pytest.mark.parametrize("heads", [5, 40])  # narrow rows take another max path than wide ones
def test_evidence_from_row_stats_is_bit_for_bit(heads: int) -> None:
    rng = np.random.default_rng(heads)
    logits = (rng.normal(size=(300, heads)) * 4).astype(np.float16).astype(np.float32)
    t = 1.7
    stats = rule.softmax_row_stats(logits, t)  # on all rows, as the probe-output cache does
    rows = np.sort(rng.choice(300, 120, replace=False))  # a task's rows
    probs = rule.model_probabilities(logits[rows], t)
    for group in [(0,), (3,), (1, 2), (0, 2, 4)]:
        direct = rule.group_evidence(probs, group)
        via = rule.group_evidence_from_stats(logits[rows], stats[rows], group, t)
        assert np.array_equal(direct, via), group


def test_a_problem_with_row_stats_gives_the_same_plan() -> None:
    rng = np.random.default_rng(0)
    k, n_per = 4, 10
    labels = np.repeat(np.arange(k), n_per)
    logits, cands, temps = {}, [], {}
    for j in range(5):
        m = f"m{j}"
        logits[m] = rng.normal(size=(labels.size, 6)).astype(np.float32)
        temps[m] = 1.0 + j / 4
        for c in range(k):
            head = int(rng.integers(0, 6))
            logits[m][labels == c, head] += 2.0 * (j % 2 + 1)
            cands.append(chco.Candidate(c, HeadGroup(m, (head,), "exact", 0.5 + j / 20)))
        cands.append(chco.Candidate(j % k, HeadGroup(m, (0, 1), "descendants", 0.6)))
    stats = {m: rule.softmax_row_stats(a, temps[m]) for m, a in logits.items()}
    plans = [
        chco.solve_heuristic(
            chco.ChcoProblem(k, cands, logits, labels, temps, budget=2, row_stats=rs)
        )
        for rs in (None, stats)
    ]
    assert plans[0].assignment == plans[1].assignment
    assert plans[0].estimated_accuracy == plans[1].estimated_accuracy
    assert plans[0].per_class_accuracy == plans[1].per_class_accuracy


def test_one_cache_per_database() -> None:
    """Two databases can stand at the same version number: their reads never share a cache."""
    from dataclasses import replace
    from types import SimpleNamespace

    from mllgraph.select import run as select
    from mllgraph.settings import Settings

    a = Settings(neo4j_uri="bolt://a:7687")
    b = replace(a, neo4j_uri="bolt://b:7687")
    other_db = replace(a, neo4j_database="other")

    def graph(s: Settings) -> SimpleNamespace:  # what the key reads of a Graph
        return SimpleNamespace(settings=s, database=s.neo4j_database)

    first = select.catalogue_cache(graph(a), a)
    assert select.catalogue_cache(graph(a), a) is first
    assert select.catalogue_cache(graph(b), a) is not first
    assert select.catalogue_cache(graph(other_db), a) is not first
    smaller = replace(a, select_cache_entries=5)
    assert select.catalogue_cache(graph(a), smaller).capacity == 5
