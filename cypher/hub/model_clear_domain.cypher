// Forget a model's input-domain profile: it is trusted on every image again; bump the
// catalogue version. Returns the sha256 it had (null if none), nothing when not registered.
// params: id
MATCH (m:Model {id: $id})
WITH m, m.domain_sha256 AS previous
REMOVE m.domain_sha256, m.domain_threshold, m.domain_images, m.domain_source
WITH m, previous
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
RETURN previous, cat.version AS catalogue_version
