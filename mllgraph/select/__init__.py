"""Step 2, selection: from a task's class names to a plan of heads.

In: class names (and optionally pinned wnids), options (budget of models, solver, sub-hub).
Out: a plan document (`plan`) stored in Neo4j under a deterministic id: per class its
concept, coverage and heads, the chosen models, and the combination rule's parameters.

- `ground`: class names to SDAG concepts (lexicon, morphology, context, embeddings).
- `embed`: the offline text encoder grounding uses.
- `chco`: Classification Head Combination Optimization (pure: exact and heuristic solvers
  simulated on stored probe outputs).
- `plan`: the plan document, the one contract with inference; class-name limits.
- `run`: the I/O: candidates by Cypher, probe outputs, CHCO, storing the plan.

Graph statements: `cypher/select/`.
"""
