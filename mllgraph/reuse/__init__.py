"""Step 3, reuse: serve plans — run a plan's experts on images and combine their heads.

In: a plan document (stored or inline) and images. Out: per image the class probabilities,
the heads that decided, and whether an uncovered class's patch decided. The maths is
`mllgraph.combine` and `mllgraph.plan.apply`; this room is the serving machinery.

- `images`: decoding PNG/JPEG/raw pixels with limits.
- `admission`: a budget of decoded pixels in flight across requests.
- `cache`: experts on the device under a byte budget (fp16 on CUDA).
- `classifier`: `PlanClassifier`, each model run once per batch, heads combined.
- `batcher`: dynamic batching across concurrent requests, OOM halving.
- `vlm`: evidence for uncovered classes from an open_clip model (loads weights, so here).
- `bundle`: a plan with its weights, read and written, for machines without Neo4j.

Imports plan, hub, combine and below. Must not import ground, label, select, hubs, the
services, the CLI, the web page or eval. Graph statements: none of its own.
"""
