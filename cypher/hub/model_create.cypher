// Register a model with its heads and declared concepts, and bump the catalogue version.
CREATE (m:Model)
SET m = $model, m.created_at = datetime()
WITH m
CALL (m) {
  UNWIND $heads AS head
  CREATE (m)-[:HAS_HEAD]->(h:Head {id: m.id + '#' + toString(head.index), model_id: m.id,
                                   index: head.index, label: head.label})
  WITH h, head WHERE head.wnid IS NOT NULL
  MATCH (c:Concept {wnid: head.wnid})
  CREATE (h)-[:DECLARED]->(c)
}
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
RETURN m {.*} AS model, cat.version AS catalogue_version
