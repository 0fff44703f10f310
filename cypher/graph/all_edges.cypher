// Every IS_A link as two aligned lists of wnids (the cycle check runs on these in memory).
MATCH (c:Concept)-[:IS_A]->(p:Concept)
RETURN collect(c.wnid) AS children, collect(p.wnid) AS parents
