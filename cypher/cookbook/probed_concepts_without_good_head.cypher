// Concepts that have probe images but no head labelled on them at score >= $min_score:
// where the hub needs a new expert.
// params: min_score (e.g. 0.5)
MATCH (c:Concept) WHERE c.probe_count > 0
OPTIONAL MATCH (:Head)-[l:LABELED]->(c)
WITH c, max(l.score) AS best
WHERE best IS NULL OR best < $min_score
RETURN c.wnid AS wnid, c.name AS concept, c.probe_count AS probes, round(best, 3) AS best_score
ORDER BY concept
