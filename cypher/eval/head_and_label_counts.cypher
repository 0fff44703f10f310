// Heads of registered models and LABELED edges in the catalogue (benchmarks).
MATCH (:Model)-[:HAS_HEAD]->(h:Head)
WITH count(h) AS heads
MATCH ()-[l:LABELED]->()
RETURN heads, count(l) AS labels
