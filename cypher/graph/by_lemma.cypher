// Concepts a lemma names, most frequent sense first.
MATCH (:Lemma {key: $key})-[n:NAMES]->(c:Concept)
RETURN c.wnid AS wnid, c.name AS name, c.definition AS definition, n.sense AS sense
ORDER BY n.sense
