// How many concepts the hub covers at quality >= $min_score, and by how many models each.
// params: min_score (e.g. 0.5)
MATCH (m:Model)-[:HAS_HEAD]->(:Head)-[l:LABELED]->(c:Concept)
WHERE l.score >= $min_score
WITH c, count(DISTINCT m) AS models
RETURN count(c) AS concepts_covered, sum(models) AS model_concept_pairs,
       round(avg(models), 2) AS models_per_concept
