// How many concepts the hub covers at quality >= $min_score, and by how many models each.
// (Starts from the LABELED score index and reads the model id off the head, so it never
// walks HAS_HEAD.)
// params: min_score (e.g. 0.5)
MATCH (h:Head)-[l:LABELED]->(c:Concept)
WHERE l.score >= $min_score
WITH c, count(DISTINCT h.model_id) AS models
RETURN count(c) AS concepts_covered, sum(models) AS model_concept_pairs,
       round(avg(models), 2) AS models_per_concept
