"""Standard hubs: builders that fill a catalogue with probe images and experts through the
public steps (register, add probes, label), for the demo, the benchmarks and the tests.

- `fashion`: the Fashion-MNIST world (its reader, probe pool, trained experts, `hub build`).
- `emoji`: the emoji world's images (packages, styles, rasters, augmented probe folders, the
  leave-one-style-out split).

A user's own hub needs none of this: `mllgraph probes add` and `mllgraph models register`
do the same. Imports graph, hub, ground, label and below. Must not import select, reuse,
the services, the CLI, the web page or eval.
"""
