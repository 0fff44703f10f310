"""mllgraph.gc_pause: the collector is off inside a block and as before after it."""

from __future__ import annotations

import gc
import subprocess
import sys

from mllgraph import gc_pause


def test_paused_restores_the_collector_as_found() -> None:
    assert gc.isenabled()
    with gc_pause.paused():
        assert not gc.isenabled()
        with gc_pause.paused():  # nested: the outer block decides
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_pause.paused():
            pass
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        gc.enable()


def test_paused_is_restored_after_an_error() -> None:
    try:
        with gc_pause.paused():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()


def test_freeze_moves_what_lives_out_of_later_collections() -> None:
    """In a fresh process (freezing is process-wide): objects alive at the end of a frozen
    block are no longer walked, until exit hands them back; an error freezes nothing."""
    code = (
        "import gc\n"
        "from mllgraph import gc_pause\n"
        "try:\n"
        "    with gc_pause.paused(freeze=True):\n"
        "        raise ValueError\n"
        "except ValueError:\n"
        "    pass\n"
        "assert gc.get_freeze_count() == 0\n"
        "with gc_pause.paused(freeze=True):\n"
        "    kept = [[i] for i in range(1000)]\n"
        "assert gc.get_freeze_count() >= 1000 and gc.isenabled()\n"
        "import atexit\n"
        "atexit._run_exitfuncs()  # as at exit: handed back to the collector\n"
        "assert gc.get_freeze_count() == 0\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
