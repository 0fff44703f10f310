// New probe images under a concept: the models whose heads declare it (or a concept under
// it), or were measured on it (or under it), have out-of-date labels. Mark them stale.
// params: wnid
MATCH (c:Concept {wnid: $wnid})<-[:IS_A*0..]-(x:Concept)
WITH DISTINCT x
MATCH (m:Model)-[:HAS_HEAD]->(:Head)-[r:DECLARED|LABELED]->(x)
WHERE type(r) = 'DECLARED' OR r.method = 'probe'
WITH DISTINCT m
SET m.stale = true
RETURN m.id AS model
ORDER BY model
