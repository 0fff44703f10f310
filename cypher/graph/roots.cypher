// Concepts with no parent: a well-formed SDAG has exactly one, entity.n.01.
MATCH (c:Concept) WHERE NOT (c)-[:IS_A]->()
RETURN c.wnid AS wnid, c.name AS name
