// Each model's heads that declare a probed concept or a concept under one, with those probed
// concepts: what the estimate calibrations (mllgraph.select.estimates) take as a model's own
// heads for a probed concept. Walks up from each declared concept only.
// params: ids (model ids)
UNWIND $ids AS id
MATCH (m:Model {id: id})-[:HAS_HEAD]->(h:Head)-[:DECLARED]->(d:Concept)
MATCH (d)-[:IS_A*0..]->(c:Concept)
WHERE EXISTS { (c)<-[:PROBES]-(:ProbeSet) }
RETURN id AS model, h.index AS head, collect(DISTINCT c.wnid) AS probed
ORDER BY model, head
