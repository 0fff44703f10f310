// The broad expert that patches a plan's uncovered classes (mllgraph.reuse.conse): the model
// with the most heads (at least $min_heads) that declares concepts, then the best stated
// top-1 accuracy, then the id. Sorting by num_classes, not by counting DECLARED edges, keeps
// this cheap on a hub of thousands of models.
// params: min_heads, models (sub-hub ids or null)
MATCH (m:Model)
WHERE m.num_classes >= $min_heads AND ($models IS NULL OR m.id IN $models)
  AND EXISTS { MATCH (m)-[:HAS_HEAD]->(:Head)-[:DECLARED]->(:Concept) }
RETURN m.id AS model, m.version AS version, coalesce(m.temperature, 1.0) AS temperature,
       m.num_classes AS num_heads
ORDER BY m.num_classes DESC, coalesce(m.top1_accuracy, 0.0) DESC, m.id
LIMIT 1
