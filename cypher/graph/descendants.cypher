// Descendants of a concept, nearest first, at most $limit.
MATCH (:Concept {wnid: $wnid})<-[:IS_A*1..]-(d:Concept)
WITH DISTINCT d
RETURN d.wnid AS wnid, d.name AS name, d.depth AS depth
ORDER BY depth, name
LIMIT $limit
