"""Build large, long-lived structures without the cyclic garbage collector walking them.

CPython runs its collector every few hundred new container objects, and its older generations
walk every tracked object alive. While the WordNet lexicon (82k synsets, 118k lemmas) or the
grounding's spelling indexes are built, those walks cost more than the building itself
(measured in one process: the grounding resolver 1.40 -> 0.74 s, its spelling index 0.39 ->
0.10 s). Nothing built in such a block is cyclic garbage, so pausing the collector for it
loses nothing; it runs again as before afterwards.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache


@cache
def _unfreeze_at_exit() -> None:
    """At exit, hand frozen objects back to the collector, so that the interpreter's last
    collection frees them as it would have (extension modules such as triton's report
    objects never freed at exit as leaks)."""
    atexit.register(gc.unfreeze)


@contextmanager
def paused(*, freeze: bool = False) -> Iterator[None]:
    """The block runs with the cyclic collector off (and it is back on afterwards, unless it
    was already off: nested and concurrent blocks leave it as the outermost found it).

    `freeze`: for what lives as long as the process (a cached lexicon), move every object
    alive at the end of the block out of the collector's reach (`gc.freeze`), so that no
    later collection walks them again: a full one over the lexicon takes ~0.2 s, a pause a
    request would otherwise meet now and then. What is frozen is never collected, so only
    blocks whose objects stay alive to the end of the process ask for it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if freeze:
            gc.freeze()
            _unfreeze_at_exit()
    finally:
        if was_enabled:
            gc.enable()
