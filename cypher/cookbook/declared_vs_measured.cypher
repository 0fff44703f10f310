// Heads whose best measured concept is not what they declare (nor under it): where a model's
// own label names mislead (group labels, shared by several heads, are left out).
// params: model_id (e.g. 'fashion-0-000-test_resnet@1')
MATCH (:Model {id: $model_id})-[:HAS_HEAD]->(h:Head)-[:DECLARED]->(d:Concept)
MATCH (h)-[l:LABELED]->(c:Concept) WHERE l.method <> 'group'
WITH h, d, c, l ORDER BY l.score DESC
WITH h, d, collect({concept: c, score: l.score})[0] AS best
WITH h, d, best.concept AS mc, best.score AS score
WHERE mc <> d AND NOT (mc)-[:IS_A*1..]->(d)
RETURN h.index AS head, h.label AS head_label, d.name AS declared, mc.name AS measured,
       round(score, 3) AS score
ORDER BY head
