"""Step 3, reuse: run a plan's experts on images and combine their heads into one classifier.

In: a plan document (stored or inline) and images. Out: per image the class probabilities,
the heads that decided, and whether an uncovered class's patch decided.

- `rule`: the combination rule, shared with selection (pure).
- `images`: decoding PNG/JPEG/raw pixels with limits.
- `cache`: experts on the device under a byte budget (fp16 on CUDA).
- `classifier`: `PlanClassifier`, each model run once per batch, heads combined.
- `vlm`: evidence for uncovered classes (open_clip patch, offline fallback).
- `batcher`: dynamic batching across concurrent requests, OOM halving.
- `bundle`: a plan with its weights for machines without Neo4j.

Graph statements: none of its own (model records are read through `hub.registry`).
"""
