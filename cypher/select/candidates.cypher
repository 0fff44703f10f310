// Candidate heads for every class of a task, in one round trip. Per target concept v:
//   exact        heads labelled on v itself;
//   group        a model's heads measured together on v (their declared concepts lie under v);
//   descendants  one model's heads labelled on concepts strictly under v (summed at use);
//   ancestor     heads labelled on an ancestor of v that no other task class lies under
//                (score discounted by $ancestor_discount);
//   related      heads labelled on a sibling or cousin of v: a concept at most two steps
//                below an ancestor at most two steps above v, where no other task class lies
//                under that ancestor (score discounted by $related_discount).
// params: targets [{index, wnid}] (the classes to search: all of the task's, or the ones a
//         per-concept cache lacks), all_wnids (every task class's wnid: what blocks
//         ancestors), min_score, per_kind_limit, allow_ancestor, ancestor_discount,
//         related_discount, model_groups (a list of sub-hubs, each a list of model ids or
//         null for the whole hub: filtered here, before any per-kind limit, so a sub-hub sees
//         all of its own heads; each group is searched on its own, its rows tagged with its
//         position as `model_group`: [[a], [b]] gives each model's own best heads per kind),
//         scope (the union of the groups' models, or null when a group is null)
//
// "No other task class lies under a": a, an ancestor of v, is also an ancestor-or-self of
// another task class exactly when at least two task classes lie at or under it. So the
// blocked concepts are computed once per task (`shared`: every concept at or above two or
// more of $all_wnids) rather than once per target (K x (K-1) upward walks: 4.5M db hits,
// ~0.8 s for 100 classes). A target's rows depend only on its concept, the options and
// `shared` restricted to its ancestors (what `mllgraph.select.reads` keys them by).
//
// Each target's walks and label reads run once, for every model any group names ($scope:
// their union, or null for the whole hub), before the groups: each group then filters and
// ranks those rows (kept per model, all that a group's limit may take). Before, the walks
// ran once per group: reading 15 one-model groups cost 15 times one group (0.46 s against
// 0.06 s for 10 targets).
UNWIND CASE WHEN $allow_ancestor THEN $all_wnids ELSE [] END AS w0
MATCH (:Concept {wnid: w0})-[:IS_A*0..]->(x:Concept)
WITH x, count(DISTINCT w0) AS n WHERE n >= 2
WITH collect(x.wnid) AS shared
UNWIND $targets AS t
MATCH (v:Concept {wnid: t.wnid})
CALL (v) {
  MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(v)
  WHERE l.method <> 'group' AND l.score >= $min_score AND ($scope IS NULL OR m.id IN $scope)
  RETURN collect({model: m.id, heads: [h.index], labels: [h.label], score: l.score}) AS exact
}
CALL (v) {
  MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[l:LABELED {method: 'group'}]->(v)
  WHERE l.score >= $min_score AND ($scope IS NULL OR m.id IN $scope)
  WITH m, l.group_heads AS heads, max(l.score) AS score, collect(h.label) AS labels
  RETURN collect({model: m.id, heads: heads, labels: labels, score: score}) AS grouped
}
CALL (v) {
  MATCH (v)<-[:IS_A*1..]-(d:Concept)
  WITH DISTINCT d
  MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(d)
  WHERE l.method <> 'group' AND l.score >= $min_score AND ($scope IS NULL OR m.id IN $scope)
  WITH m, h, max(l.score) AS best ORDER BY h.index
  WITH m, collect(h.index) AS heads, collect(h.label) AS labels, avg(best) AS score
  RETURN collect({model: m.id, heads: heads, labels: labels, score: score}) AS below
}
CALL (v, shared) {
  // Ancestors of the other classes are blocked: going up is cheap, going down is not.
  WITH v, shared WHERE $allow_ancestor
  MATCH (v)-[:IS_A*1..]->(a:Concept)
  WHERE NOT a.wnid IN shared
  WITH DISTINCT a
  MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(a)
  WHERE l.method <> 'group' AND l.score >= $min_score AND ($scope IS NULL OR m.id IN $scope)
  RETURN collect({model: m.id, heads: [h.index], labels: [h.label], score: l.score,
                  via: a.wnid, depth: a.depth}) AS above
}
CALL (v, shared) {
  WITH v, shared WHERE $allow_ancestor
  MATCH (v)-[:IS_A*1..2]->(a:Concept)
  WHERE NOT a.wnid IN shared
  MATCH (a)<-[:IS_A*1..2]-(u:Concept)
  WHERE u <> v AND NOT (u)-[:IS_A*1..]->(v) AND NOT (v)-[:IS_A*1..]->(u)
  WITH DISTINCT u
  MATCH (m:Model)-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(u)
  WHERE l.method <> 'group' AND l.score >= $min_score AND ($scope IS NULL OR m.id IN $scope)
  RETURN collect({model: m.id, heads: [h.index], labels: [h.label], score: l.score,
                  via: u.wnid, depth: u.depth}) AS near
}
UNWIND range(0, size($model_groups) - 1) AS g
WITH v, t, g, $model_groups[g] AS models, exact, grouped, below, above, near
CALL (v, models, exact, grouped, below, above, near) {
  UNWIND exact AS r
  WITH r WHERE models IS NULL OR r.model IN models
  WITH r ORDER BY r.score DESC, r.model, r.heads[0] LIMIT $per_kind_limit
  RETURN r.model AS model, r.heads AS heads, r.labels AS labels, 'exact' AS kind,
         r.score AS score, v.wnid AS via, v.depth AS via_depth
  UNION
  UNWIND grouped AS r
  WITH r WHERE models IS NULL OR r.model IN models
  WITH r ORDER BY r.score DESC, r.model LIMIT $per_kind_limit
  RETURN r.model AS model, r.heads AS heads, r.labels AS labels, 'group' AS kind,
         r.score AS score, v.wnid AS via, v.depth AS via_depth
  UNION
  UNWIND below AS r
  WITH r WHERE models IS NULL OR r.model IN models
  WITH r ORDER BY r.score DESC, r.model LIMIT $per_kind_limit
  RETURN r.model AS model, r.heads AS heads, r.labels AS labels, 'descendants' AS kind,
         r.score AS score, null AS via, null AS via_depth
  UNION
  UNWIND above AS r
  WITH r WHERE models IS NULL OR r.model IN models
  WITH r ORDER BY r.score DESC, r.depth DESC, r.model, r.heads[0] LIMIT $per_kind_limit
  RETURN r.model AS model, r.heads AS heads, r.labels AS labels, 'ancestor' AS kind,
         r.score * $ancestor_discount AS score, r.via AS via, r.depth AS via_depth
  UNION
  UNWIND near AS r
  WITH r WHERE models IS NULL OR r.model IN models
  WITH r ORDER BY r.score DESC, r.model, r.heads[0] LIMIT $per_kind_limit
  RETURN r.model AS model, r.heads AS heads, r.labels AS labels, 'related' AS kind,
         r.score * $related_discount AS score, r.via AS via, r.depth AS via_depth
}
MATCH (m:Model {id: model})
RETURN t.index AS class_index, g AS model_group, model, m.version AS version, coalesce(m.temperature, 1.0) AS temperature,
       m.labelled_at IS NOT NULL AS labelled, m.num_classes AS num_heads, heads, labels, kind,
       score, via, via_depth
ORDER BY class_index, model_group, score DESC, model, kind, heads
