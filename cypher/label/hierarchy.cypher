// For labelling: each given concept with its name, depth and all its ancestors.
UNWIND $wnids AS w
MATCH (c:Concept {wnid: w})
OPTIONAL MATCH (c)-[:IS_A*1..]->(a:Concept)
WITH c, collect(DISTINCT a) AS ancestors
RETURN c.wnid AS wnid, c.name AS name, c.depth AS depth,
       [a IN ancestors | a.wnid] AS ancestor_wnids,
       [a IN ancestors | a.name] AS ancestor_names,
       [a IN ancestors | a.depth] AS ancestor_depths
