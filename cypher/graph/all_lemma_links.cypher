// Every lemma -> concept link as two aligned lists.
MATCH (l:Lemma)-[:NAMES]->(c:Concept) RETURN collect(l.key) AS keys, collect(c.wnid) AS wnids
