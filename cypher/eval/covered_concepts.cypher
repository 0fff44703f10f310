// Benchmark only (`mllgraph bench select --hub`): the concepts the hub covers with a measured
// label at quality >= $min_score, how many models cover each, and whether probe images are
// attached to it (then a task of such classes fits the stacked rule).
// params: min_score
MATCH (h:Head)-[l:LABELED]->(c:Concept)
WHERE l.score >= $min_score
WITH c, count(DISTINCT h.model_id) AS models
OPTIONAL MATCH (p:ProbeSet)-[:PROBES]->(c)
RETURN c.wnid AS wnid, models, count(p) > 0 AS probed
ORDER BY wnid
