// Heads on concepts near a class that nothing else covers, for the text-closeness test in
// mllgraph.select.nearby. Per target v: every concept u at most two steps below an ancestor
// at most two steps above v (siblings and cousins), neither above nor below v, that is not
// another task class nor above or below one, with measured labels or declared heads. Unlike
// the candidates query's `related` kind, an ancestor shared with another task class does not
// block u: the caller keeps u only when the text encoder puts it close to this class and
// closer to it than to any other class ("handbag" borrows bag.n.01's heads though "coffee
// mug" also sits under container.n.01).
// params: targets [{index, wnid}] (classes still uncovered), all_wnids (every task class),
//         min_score, per_kind_limit, declared_prior, models (sub-hub ids or null)
UNWIND $targets AS t
MATCH (v:Concept {wnid: t.wnid})
MATCH (v)-[:IS_A*1..2]->(:Concept)<-[:IS_A*1..2]-(u:Concept)
WHERE u <> v AND NOT (u)-[:IS_A*1..]->(v) AND NOT (v)-[:IS_A*1..]->(u)
  AND NOT u.wnid IN $all_wnids
WITH DISTINCT t, u
// Going up from u is cheap; going down from it is not: "another class lies under u" is
// checked from the other classes' side, once per task, as the set of their ancestors.
CALL (t) {
  UNWIND $all_wnids AS w
  WITH w WHERE w <> t.wnid
  MATCH (:Concept {wnid: w})-[:IS_A*1..]->(x:Concept)
  RETURN collect(DISTINCT x.wnid) AS above_others
}
WITH t, u, above_others
WHERE NOT u.wnid IN above_others
  AND NOT EXISTS {
    MATCH (u)-[:IS_A*1..]->(o:Concept) WHERE o.wnid IN $all_wnids AND o.wnid <> t.wnid
  }
CALL (t, u) {
  MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(u)
  WHERE l.method <> 'group' AND l.score >= $min_score AND ($models IS NULL OR m.id IN $models)
  WITH m, h, l ORDER BY l.score DESC, m.id, h.index LIMIT $per_kind_limit
  RETURN m.id AS model, [h.index] AS heads, [h.label] AS labels, 'related' AS kind,
         l.score AS score
  UNION
  MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[:DECLARED]->(u)
  // Measured labels win: a head measured on u is judged by its label, not its declaration.
  WHERE ($models IS NULL OR m.id IN $models) AND NOT (h)-[:LABELED]->(u)
  WITH m, h, coalesce(m.top1_accuracy, $declared_prior) AS score
  ORDER BY score DESC, m.id, h.index LIMIT $per_kind_limit
  RETURN m.id AS model, [h.index] AS heads, [h.label] AS labels, 'declared_related' AS kind,
         score
}
MATCH (m:Model {id: model})
RETURN t.index AS class_index, model, m.version AS version,
       coalesce(m.temperature, 1.0) AS temperature, m.labelled_at IS NOT NULL AS labelled,
       m.num_classes AS num_heads, heads, labels, kind, score, u.wnid AS via,
       u.depth AS via_depth, u.lemmas AS via_lemmas
ORDER BY class_index, score DESC, model
