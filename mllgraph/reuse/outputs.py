"""Expert outputs kept by image content, so an image meets each expert once per service.

People try class lists on the same images: the web page's "try other words", `classify`
again with a reworded task, the main job's tasks over one test set, another system asking
about the photos it asked about a minute ago. The plan changes; the experts' logits for an
image do not. So `PlanClassifier.model_logits` looks each (model, image) up here first and
runs a model only on the images it has not seen.

- Key: the model's identity as the model cache loads it (id, weights sha256, precision) and
  the decoded image's digest (`image_digest`: shape, dtype and pixels, and the caller in the
  inference service: callers never share kept outputs). Re-registered weights or a model
  demoted to fp32 miss, as they must.
- Value: the model's float32 logits row for that image (a copy: a batch's array is not kept
  alive by a view).
- Bounded by bytes, least recently used evicted; `max_bytes=0` turns it off
  (`MLLGRAPH_INFER_OUTPUT_CACHE_MB`). Thread-safe.

A kept row is the logits of the image's first pass. Recomputing it in another batch would
give the same figures up to float rounding (a batch's size changes which kernels run).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np

ROW_OVERHEAD = 160  # bytes a kept row costs beyond its numbers (key, dict slot, ndarray)


def image_digest(image: np.ndarray, scope: str = "") -> bytes:
    """16 bytes that change with the image's shape, dtype or any pixel, and with `scope`:
    the service passes the caller, so no caller learns (from `cached_images` or a fast
    answer) which images another caller sent."""
    image = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{scope}\0{image.shape}{image.dtype.str}".encode())
    h.update(memoryview(image).cast("B"))
    return h.digest()


class OutputCache:
    """(model key, image digest) -> float32 logits row, least recently used beyond
    `max_bytes` evicted. `hits`/`misses` count rows looked up."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._rows: OrderedDict[tuple[Hashable, bytes], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._rows)

    def get_many(self, model: Hashable, digests: Sequence[bytes]) -> list[np.ndarray | None]:
        """Each image's kept row for `model`, None where none is kept."""
        out: list[np.ndarray | None] = []
        with self._lock:
            for d in digests:
                row = self._rows.get((model, d))
                if row is not None:
                    self._rows.move_to_end((model, d))
                out.append(row)
            found = sum(r is not None for r in out)
            self.hits += found
            self.misses += len(out) - found
        return out

    def put_many(self, model: Hashable, digests: Sequence[bytes], rows: np.ndarray) -> None:
        """Keep `rows[i]` (logits, (N, H)) as image `digests[i]`'s output of `model`."""
        if not self.enabled:
            return
        with self._lock:
            for d, row in zip(digests, rows, strict=True):
                key = (model, d)
                if key in self._rows:
                    continue
                kept = np.array(row, dtype=np.float32)  # a copy, not a view of the batch
                size = kept.nbytes + ROW_OVERHEAD
                if size > self.max_bytes:
                    continue
                while self.nbytes + size > self.max_bytes:
                    _, old = self._rows.popitem(last=False)
                    self.nbytes -= old.nbytes + ROW_OVERHEAD
                    self.evictions += 1
                self._rows[key] = kept
                self.nbytes += size

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self.nbytes = 0
