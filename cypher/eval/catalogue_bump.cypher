// Benchmark only (`mllgraph bench select`): bump the catalogue version after a batch of
// synthetic models, as registration and labelling do.
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
RETURN cat.version AS catalogue_version
