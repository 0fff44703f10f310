"""Step 2, selection: from a task's class names to a plan of heads.

In: class names (and optionally pinned wnids), options (budget of models, solver, sub-hub).
Out: a plan document (`mllgraph.plan`) stored in Neo4j under a deterministic id: per class
its concept, coverage and heads, the chosen models, and the combination rule's inputs.

- `run`: `select()`: grounding, candidates by Cypher, probe outputs, CHCO, storing the plan.
- `candidates`, `probe_data`, `alternatives`, `stacked_choice`, `patch`: the parts `select()`
  runs (declared and nearby candidates; the probe-output cache and the task's probe matrix;
  solving and each class's alternatives; the stacked rule's choice; the ConSE patch).
- `chco`: Classification Head Combination Optimization (pure: exact and heuristic solvers
  simulated on stored probe outputs).
- `reads`, `cache`: what selection reads from the graph, cached per catalogue version.
- `coverage`: the hub's coverage of candidate senses, handed to grounding.
- `nearby`: text-close neighbours for classes nothing else covers (pure).
- `retention`: how long stored plans are kept.

Imports plan, ground, label (probe outputs' readers live in hub), hub, graph, combine and
below. Must not import reuse or anything above it. Graph statements: `cypher/select/`.
"""
