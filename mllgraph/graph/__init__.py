"""The SDAG in Neo4j: the WordNet 3.0 noun hierarchy as `(:Concept)-[:IS_A]->(:Concept)`.

In: WordNet's data files (`wordnet`), a Neo4j server (the user's, via NEO4J_URI, or the
project-managed one: `neo4j_server`). Out: a loaded, verified DAG of 82,115 concepts with
lemma lookups (`sdag`), queried through the thin typed layer in `db`.

- `db`: the driver wrapper (`Graph.read`/`write` run `cypher/` files by name, in READ or
  WRITE managed transactions; errors mapped to the project's own).
- `cypher`: loads statements from `cypher/` by name.
- `neo4j_server`: fetch, configure, start and stop the project-managed Neo4j.
- `wordnet`: parse WordNet 3.0 nouns (offsets are ImageNet wnids).
- `sdag`: load the SDAG (idempotent, resumable), ancestors/descendants/LCA, add a concept.

Graph statements: `cypher/graph/`.
"""
