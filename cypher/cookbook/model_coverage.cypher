// One model's coverage: each concept it is labelled on, its best head and score.
// params: model_id (e.g. 'efficientnet_lite0@1')
MATCH (:Model {id: $model_id})-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(c:Concept)
WITH c, h, l ORDER BY l.score DESC
WITH c, collect({head: h.index, label: h.label, score: l.score, method: l.method})[0] AS best
RETURN c.wnid AS wnid, c.name AS concept, best.head AS head, best.label AS head_label,
       round(best.score, 3) AS score, best.method AS method
ORDER BY score DESC, concept
