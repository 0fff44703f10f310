// Benchmark only (`mllgraph bench select`): one batch of synthetic LABELED edges, with the
// properties labelling writes (hub/labels_replace).
// params: labels [{head_id, wnid, score, method, n_probe, group_heads}]
UNWIND $labels AS row
MATCH (h:Head {id: row.head_id})
MATCH (c:Concept {wnid: row.wnid})
CREATE (h)-[:LABELED {score: row.score, precision: row.score, recall: row.score,
                      mean_prob: row.score, n_probe: row.n_probe, method: row.method,
                      group_heads: row.group_heads}]->(c)
RETURN count(*) AS labels
