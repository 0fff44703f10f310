// Remove a probe set and keep its concept's total.
MATCH (p:ProbeSet {id: $id})-[:PROBES]->(c:Concept)
DETACH DELETE p
WITH c
OPTIONAL MATCH (c)<-[:PROBES]-(rest:ProbeSet)
WITH c, sum(rest.count) AS total
SET c.probe_count = CASE WHEN total = 0 THEN null ELSE total END
RETURN c.wnid AS wnid, total
