// Attach a probe set (images stored outside Neo4j) to a concept; keep the concept's total;
// bump the catalogue version (selection reads the probe sets under a task's classes).
MATCH (c:Concept {wnid: $wnid})
CREATE (p:ProbeSet {id: $id, count: $count, sha256: $sha256, path: $path, source: $source,
                    height: $height, width: $width, channels: $channels,
                    created_at: datetime()})-[:PROBES]->(c)
WITH c
MATCH (c)<-[:PROBES]-(all:ProbeSet)
WITH c, sum(all.count) AS total
SET c.probe_count = total
WITH c, total
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
RETURN c.wnid AS wnid, c.name AS concept, total
