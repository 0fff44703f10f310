// Benchmark only (`mllgraph bench select`): one batch of synthetic, already-labelled models
// with their heads and DECLARED edges, as registration would write them (no weights).
// params: models [{id, name, num_classes, heads: [{index, label, wnid}]}]
UNWIND $models AS row
CREATE (m:Model {id: row.id, name: row.name, version: '1', arch: 'synthetic', source: 'bench',
                 num_classes: row.num_classes, temperature: 1.0, created_at: datetime(),
                 labelled_at: datetime()})
WITH m, row
CALL (m, row) {
  UNWIND row.heads AS head
  MATCH (c:Concept {wnid: head.wnid})
  CREATE (m)-[:HAS_HEAD]->(h:Head {id: m.id + '#' + toString(head.index), model_id: m.id,
                                   index: head.index, label: head.label})
  CREATE (h)-[:DECLARED]->(c)
}
RETURN count(m) AS models
