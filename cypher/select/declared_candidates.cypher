// Declared candidates: heads that cover a task class by what they DECLARE, for the classes
// no measured label covers (the caller passes only those as targets). Their quality is a
// prior, not a measurement: the model's stated top1_accuracy, else $default_prior.
//   declared              heads declaring v itself;
//   declared_descendants  one model's heads declaring concepts strictly under v, none of them
//                         at or under another task class (summed at use: "cat" <- tabby +
//                         tiger cat + Persian cat + ...);
//   declared_ancestor     a model's head declaring the nearest ancestor of v that no other task
//                         class lies under (prior x $ancestor_discount).
// params: targets [{index, wnid}] (the classes to cover), all_wnids (every task class's wnid),
//         models (sub-hub model ids, or null for the whole hub), per_kind_limit,
//         default_prior, allow_ancestor, ancestor_discount
UNWIND CASE WHEN $allow_ancestor THEN $all_wnids ELSE [] END AS w0
MATCH (:Concept {wnid: w0})-[:IS_A*0..]->(x:Concept)
WITH x, count(DISTINCT w0) AS n WHERE n >= 2
WITH collect(x.wnid) AS shared
UNWIND $targets AS t
MATCH (v:Concept {wnid: t.wnid})
CALL (v, t, shared) {
  MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[:DECLARED]->(v)
  WHERE $models IS NULL OR m.id IN $models
  WITH m, h, coalesce(m.top1_accuracy, $default_prior) AS score
  ORDER BY score DESC, m.id, h.index LIMIT $per_kind_limit
  RETURN m.id AS model, [h.index] AS heads, [h.label] AS labels, 'declared' AS kind, score,
         v.wnid AS via, v.depth AS via_depth
  UNION
  MATCH (v)<-[:IS_A*1..]-(d:Concept)
  WITH DISTINCT d
  MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[:DECLARED]->(d)
  WHERE ($models IS NULL OR m.id IN $models)
    AND NOT EXISTS {
      MATCH (d)-[:IS_A*0..]->(o:Concept) WHERE o.wnid IN $all_wnids AND o.wnid <> t.wnid
    }
  WITH m, h ORDER BY h.index
  WITH m, collect(h.index) AS heads, collect(h.label) AS labels,
       coalesce(m.top1_accuracy, $default_prior) AS score
  ORDER BY score DESC, m.id LIMIT $per_kind_limit
  RETURN m.id AS model, heads, labels, 'declared_descendants' AS kind, score, null AS via,
         null AS via_depth
  UNION
  WITH v, shared WHERE $allow_ancestor
  MATCH (v)-[:IS_A*1..]->(a:Concept)
  WHERE NOT a.wnid IN shared
  WITH DISTINCT a
  MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[:DECLARED]->(a)
  WHERE $models IS NULL OR m.id IN $models
  WITH m, h, a ORDER BY a.depth DESC, h.index
  WITH m, collect([h, a])[0] AS nearest
  WITH m, nearest[0] AS h, nearest[1] AS a,
       coalesce(m.top1_accuracy, $default_prior) * $ancestor_discount AS score
  ORDER BY score DESC, a.depth DESC, m.id LIMIT $per_kind_limit
  RETURN m.id AS model, [h.index] AS heads, [h.label] AS labels, 'declared_ancestor' AS kind,
         score, a.wnid AS via, a.depth AS via_depth
}
MATCH (m:Model {id: model})
RETURN t.index AS class_index, model, m.version AS version,
       coalesce(m.temperature, 1.0) AS temperature, m.labelled_at IS NOT NULL AS labelled,
       m.num_classes AS num_heads, heads, labels, kind, score, via, via_depth
ORDER BY class_index, score DESC, model, kind, heads
