"""`python -m mllgraph`: the same command line as `mllgraph`."""

from mllgraph.cli import main

raise SystemExit(main())
