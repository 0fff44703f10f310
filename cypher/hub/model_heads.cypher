// A model's heads in logit order, with the declared concept and the best measured labels.
MATCH (m:Model {id: $id})-[:HAS_HEAD]->(h:Head)
OPTIONAL MATCH (h)-[:DECLARED]->(d:Concept)
CALL (h) {
  OPTIONAL MATCH (h)-[l:LABELED]->(c:Concept)
  WITH l, c ORDER BY l.score DESC
  RETURN collect(CASE WHEN c IS NULL THEN NULL ELSE
    {wnid: c.wnid, name: c.name, score: l.score, precision: l.precision, recall: l.recall,
     method: l.method} END)[..$top_k] AS labels
}
RETURN h.index AS index, h.label AS label, d.wnid AS declared_wnid, d.name AS declared_name,
       labels
ORDER BY index
