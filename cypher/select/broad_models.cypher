// The hub's broadest labelled experts, for the stacked rule's model screen
// (mllgraph.select.feature_sets): the stacked rule reads every head of a model, so a broad
// expert can separate a task's classes even where the candidates query keeps none of its
// heads (it keeps the best-scored heads per class, and a big hub's narrow experts outscore
// a broad expert's). Labelled models only: the screen needs their probe outputs.
// params: min_heads, limit, models (sub-hub ids or null)
MATCH (m:Model)
WHERE m.num_classes >= $min_heads AND m.labelled_at IS NOT NULL
  AND ($models IS NULL OR m.id IN $models)
RETURN m.id AS model, m.version AS version, coalesce(m.temperature, 1.0) AS temperature,
       m.num_classes AS num_heads
ORDER BY m.num_classes DESC, coalesce(m.top1_accuracy, 0.0) DESC, m.id
LIMIT $limit
