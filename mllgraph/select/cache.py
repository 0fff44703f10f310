"""What selection keeps across requests (no I/O here): what it reads from the graph, per
catalogue version (`CatalogueCache`), and its fitted stacked rules (`FitCache`).

Every registration, labelling and deletion (and every probe-set or user-concept change) bumps
the catalogue's version in the same transaction as the change (`cypher/hub/*`,
`cypher/label/labels_replace`, `cypher/graph/*concept*`). Everything SelectHeads reads from
the graph is a function of that version and of the request, so it can be kept until the
version moves: a request reads the version (one indexed lookup) and finds the rest here.

Entries are keyed per concept where the query's answer for a concept does not depend on the
task's other classes (candidates, probe sets, sense coverage), so overlapping tasks share
them; see `mllgraph.select.reads` for each key. The cache is an LRU of `capacity` entries,
cleared whenever a request sees another version than the one its entries were read at.

No staleness window: every request pays the one version read, so a change made through any
process (another ingestion replica, the CLI) is seen by the very next SelectHeads. The read
costs about a millisecond against tens to hundreds for the queries it saves.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

_MISSING = object()


class CatalogueCache:
    """An LRU of graph reads, valid for one catalogue version at a time; thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, int(capacity))
        self.version: int | None = None
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._items)

    def at(self, version: int) -> None:
        """The catalogue is at `version`: entries read at any other version are dropped."""
        with self._lock:
            if version != self.version:
                self._items.clear()
                self.version = version

    def get(self, version: int, key: Hashable) -> Any:
        """The entry read at `version`, or `MISSING` (another version, or never read)."""
        with self._lock:
            if version != self.version or key not in self._items:
                self.misses += 1
                return _MISSING
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]

    def put(self, version: int, key: Hashable, value: Any) -> None:
        """Keep `value`, read at `version`; dropped if the cache has moved on to another."""
        if not self.enabled:
            return
        with self._lock:
            if version != self.version:
                return
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.version = None


class FitCache:
    """An LRU of `capacity` fitted stacked rules, keyed by what a fit depends on
    (`mllgraph.combine.stacked.fit_key`); thread-safe.

    Unlike graph reads, a fit needs no catalogue version: its key names every input. Model
    ids carry their version and a registered id keeps its weights (content-addressed), so
    its probe outputs for a probe set do not change; probe set ids name fixed images (a set
    cannot be re-added with other images); and the probe images of each class are in the
    key. (One gap: an id deleted and registered again with other weights is told apart only
    by its calibrated temperature, also in the key, which other weights all but surely move.)
    Two requests that miss the same key at once both fit (the same rule): no lock is held
    while fitting.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, int(capacity))
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any:
        """The fit kept under `key` (None: no rule was possible), or `MISSING`."""
        with self._lock:
            if key not in self._items:
                self.misses += 1
                return _MISSING
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


MISSING = _MISSING
