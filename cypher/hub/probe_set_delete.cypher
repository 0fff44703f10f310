// Remove a probe set, keep its concept's total, bump the catalogue version.
MATCH (p:ProbeSet {id: $id})-[:PROBES]->(c:Concept)
DETACH DELETE p
WITH c
OPTIONAL MATCH (c)<-[:PROBES]-(rest:ProbeSet)
WITH c, sum(rest.count) AS total
SET c.probe_count = CASE WHEN total = 0 THEN null ELSE total END
WITH c, total
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
RETURN c.wnid AS wnid, total
