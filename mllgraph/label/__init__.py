"""Step 1, model labelling: what each head of an expert really recognises.

In: one registered model, the hub's probe sets and the IS_A hierarchy above their concepts.
Out: `(:Head)-[:LABELED {score, precision, recall, mean_prob, n_probe, method}]->(:Concept)`
edges (measured, propagated up IS_A, and group labels for several heads together), the
model's temperature, and its stored probe outputs (which selection simulates plans on).
Adding a model costs one model's work: only its own rows are touched.

- `measure`: the pure measurement (numpy/scipy, no I/O), exactly defined in its docstring.
- `work`: the labelling work in three steps: `prepare` (reads), `compute` (the model on the
  probes and the measurement; no writes), `commit` (outputs and edges).
- `run`: dispatch: in this process, or `ray_exec` (one Ray task per model).
- `claims`: at most one labelling of a model at a time, across processes (a claim in the
  graph with a lease); the ingestion service's jobs take one.

Imports hub, graph, combine and below. Must not import ground, select, reuse or anything
above them. Graph statements: `cypher/label/`.
"""
