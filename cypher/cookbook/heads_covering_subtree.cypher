// Heads that cover a concept's subtree: heads labelled on the concept or any descendant,
// at measured score >= $min_score, best first.
// params: wnid (e.g. 'n03380867' footwear), min_score (e.g. 0.3), limit (e.g. 25)
MATCH (target:Concept {wnid: $wnid})<-[:IS_A*0..]-(c:Concept)
WITH DISTINCT c
MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(c)
WHERE l.score >= $min_score
RETURN m.id AS model, h.index AS head, h.label AS head_label, c.name AS concept,
       round(l.score, 3) AS score, l.method AS method
ORDER BY score DESC, model, head
LIMIT $limit
