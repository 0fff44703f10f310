// How the hub covers each candidate sense of a class name (grounding prefers covered senses).
//   measured   heads labelled on the concept or on a concept under it;
//   declared   heads that declare the concept or a concept under it;
//   near       heads labelled on a parent or grandparent (not group labels).
// params: wnids, min_score, models (null: the whole hub; else model ids)
UNWIND $wnids AS wnid
MATCH (c:Concept {wnid: wnid})
RETURN wnid,
  EXISTS {
    MATCH (c)<-[:IS_A*0..]-(:Concept)<-[l:LABELED]-(h:Head)
    WHERE l.score >= $min_score AND ($models IS NULL OR h.model_id IN $models)
  } AS measured,
  EXISTS {
    MATCH (c)<-[:IS_A*0..]-(:Concept)<-[:DECLARED]-(h:Head)
    WHERE $models IS NULL OR h.model_id IN $models
  } AS declared,
  EXISTS {
    MATCH (c)-[:IS_A*1..2]->(:Concept)<-[l:LABELED]-(h:Head)
    WHERE l.method <> 'group' AND l.score >= $min_score
      AND ($models IS NULL OR h.model_id IN $models)
  } AS near
