"""The Fashion-MNIST world: probe images and test images from Debian's dataset package, and
small experts trained here on class subsets.

- `data`: the IDX reader and the seeded split (probe pool, training pool, test split).
- `experts`: the expert architectures and their training.
- `build`: `mllgraph hub build`: probes, the EfficientNet-Lite builtins and trained experts,
  registered and labelled.

Its probes share the task images' distribution: results on it are "probe-pool", not
zero-shot.
"""
