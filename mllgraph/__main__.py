"""`python -m mllgraph`: the same command line as `mllgraph`."""

from mllgraph.cli import main

# Guarded: a process spawned by `hub.workers` imports this module again (as __mp_main__).
if __name__ == "__main__":
    raise SystemExit(main())
