// The direct children (hyponyms and instances) of a concept, by name, at most $limit.
// params: wnid (e.g. 'n03380867' footwear), limit (e.g. 12)
MATCH (c:Concept)-[:IS_A]->(:Concept {wnid: $wnid})
RETURN c.wnid AS wnid, c.name AS name, c.depth AS depth
ORDER BY name
LIMIT $limit
