// The best-labelled heads for one concept, with precision and recall on its probe images.
// params: wnid (e.g. 'n04133789' sandal), limit (e.g. 10)
MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(:Concept {wnid: $wnid})
RETURN m.id AS model, h.index AS head, h.label AS head_label, round(l.score, 3) AS score,
       round(l.precision, 3) AS precision, round(l.recall, 3) AS recall,
       l.n_probe AS n_probe, l.method AS method
ORDER BY score DESC, model, head
LIMIT $limit
