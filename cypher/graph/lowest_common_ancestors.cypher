// The deepest concepts that are ancestors-or-self of every concept in $wnids.
MATCH (c:Concept) WHERE c.wnid IN $wnids
MATCH (c)-[:IS_A*0..]->(a:Concept)
WITH a, count(DISTINCT c) AS n
WHERE n = size($wnids)
WITH collect(a) AS common, max(a.depth) AS deepest
UNWIND common AS a
WITH a, deepest WHERE a.depth = deepest
RETURN DISTINCT a.wnid AS wnid, a.name AS name, a.depth AS depth
ORDER BY name
