// Probe sets under each task class (the class's concept or a descendant), with how far below
// it they sit, so a set under two task classes goes to the nearer one; and where each set
// comes from (its source: the stacked rule's estimate holds one source out at a time).
// params: targets [{index, wnid}]
UNWIND $targets AS t
MATCH path = (:Concept {wnid: t.wnid})<-[:IS_A*0..]-(c:Concept)<-[:PROBES]-(p:ProbeSet)
WITH t, p, c, min(length(path)) AS distance
RETURN t.index AS class_index, p.id AS set_id, c.wnid AS wnid, p.count AS count, distance,
       coalesce(p.source, '') AS source
ORDER BY set_id, distance, class_index
