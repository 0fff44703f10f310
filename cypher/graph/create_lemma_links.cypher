// One batch of missing lemma -> concept links; `sense` is the WordNet sense rank (1 = most
// frequent). Lemma nodes are shared between senses, hence MERGE for them.
UNWIND $rows AS row
MATCH (c:Concept {wnid: row.wnid})
MERGE (l:Lemma {key: row.key})
CREATE (l)-[:NAMES {sense: row.sense}]->(c)
