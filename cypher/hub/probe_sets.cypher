// Every probe set with its concept, by concept then id.
MATCH (p:ProbeSet)-[:PROBES]->(c:Concept)
RETURN p.id AS id, c.wnid AS wnid, c.name AS concept, p.count AS count, p.path AS path,
       p.source AS source, p.sha256 AS sha256
ORDER BY c.name, p.id
