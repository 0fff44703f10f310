// Concepts by wnid or by name ('dog.n.01').
UNWIND $keys AS key
MATCH (c:Concept) WHERE c.wnid = key OR c.name = key
RETURN key, c.wnid AS wnid, c.name AS name, c.lemmas AS lemmas, c.definition AS definition,
       c.lexname AS lexname, c.depth AS depth
