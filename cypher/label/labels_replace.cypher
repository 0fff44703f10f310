// Replace one model's measured labels in one go: only this model's rows are touched.
MATCH (m:Model {id: $id})
OPTIONAL MATCH (m)-[:HAS_HEAD]->(:Head)-[old:LABELED]->()
DELETE old
WITH DISTINCT m
CALL (m) {
  UNWIND $labels AS row
  MATCH (h:Head {id: m.id + '#' + toString(row.head)})
  MATCH (c:Concept {wnid: row.wnid})
  CREATE (h)-[:LABELED {score: row.score, precision: row.precision, recall: row.recall,
                        mean_prob: row.mean_prob, n_probe: row.n_probe, method: row.method,
                        group_heads: row.group_heads}]->(c)
}
SET m.labelled_at = datetime(), m.temperature = $temperature, m.label_probe_images = $n_images,
    m.probe_outputs = $probe_outputs, m.label_seconds = $seconds, m.stale = false
// hub.cost: the cost per image labelling measured, where it measured one ({} else).
SET m += $cost
WITH m
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
RETURN cat.version AS catalogue_version
