// Attach a probe set (images stored outside Neo4j) to a concept; keep the concept's total.
MATCH (c:Concept {wnid: $wnid})
CREATE (p:ProbeSet {id: $id, count: $count, sha256: $sha256, path: $path, source: $source,
                    height: $height, width: $width, channels: $channels,
                    created_at: datetime()})-[:PROBES]->(c)
WITH c
MATCH (c)<-[:PROBES]-(all:ProbeSet)
WITH c, sum(all.count) AS total
SET c.probe_count = total
RETURN c.wnid AS wnid, c.name AS concept, total
