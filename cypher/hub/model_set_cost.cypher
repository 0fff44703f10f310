// Record a model's measured cost per image (hub.cost) and bump the catalogue version, so that
// selection reads it afresh.
MATCH (m:Model {id: $id})
SET m += $cost
WITH m
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
RETURN m {.*} AS model, cat.version AS catalogue_version
