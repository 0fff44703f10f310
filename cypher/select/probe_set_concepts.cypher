// Probe sets (at most $limit, by id) with their concept and its ancestors: the "none of these"
// calibration takes the sets outside a task (neither under nor above any of its classes), and
// where each set's images come from (its folds hold one source out at a time).
// params: limit
MATCH (p:ProbeSet)-[:PROBES]->(c:Concept)
WITH p, c
ORDER BY p.id
LIMIT $limit
OPTIONAL MATCH (c)-[:IS_A*1..]->(a:Concept)
RETURN p.id AS set_id, c.wnid AS wnid, p.count AS count, collect(DISTINCT a.wnid) AS ancestors,
       coalesce(p.source, '') AS source
ORDER BY set_id
