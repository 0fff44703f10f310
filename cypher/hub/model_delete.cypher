// Delete a model, its heads and all their DECLARED/LABELED edges; bump the catalogue version.
// `still_in_use` counts the other models that reference the same weights, read in this same
// transaction: the store removes the weights file only when it is 0.
MATCH (m:Model {id: $id})
OPTIONAL MATCH (m)-[:HAS_HEAD]->(h:Head)
OPTIONAL MATCH (h)-[l:LABELED]->()
WITH m, collect(DISTINCT h) AS heads, count(l) AS labels, m.sha256 AS sha256
FOREACH (h IN heads | DETACH DELETE h)
DETACH DELETE m
WITH size(heads) AS deleted_heads, labels AS deleted_labels, sha256
OPTIONAL MATCH (other:Model {sha256: sha256})
WITH deleted_heads, deleted_labels, sha256, count(other) AS still_in_use
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
RETURN deleted_heads, deleted_labels, sha256, still_in_use, cat.version AS catalogue_version
