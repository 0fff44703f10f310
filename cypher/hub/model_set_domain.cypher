// Record a model's input-domain profile (mllgraph.hub.domains): the profile file's sha256,
// its threshold, how many images described it and what they were; bump the catalogue
// version. Returns nothing when the model is not registered.
// params: id, sha256, threshold, images, source
MATCH (m:Model {id: $id})
SET m.domain_sha256 = $sha256,
    m.domain_threshold = $threshold,
    m.domain_images = $images,
    m.domain_source = $source
WITH m
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
RETURN m.id AS model, cat.version AS catalogue_version
