// Remove a user-added concept (WordNet's own concepts are never removed), with its lemma links.
MATCH (c:Concept {wnid: $wnid}) WHERE c.source = 'user'
OPTIONAL MATCH (l:Lemma)-[:NAMES]->(c)
WITH c, collect(l) AS lemmas
DETACH DELETE c
WITH lemmas UNWIND lemmas AS l
WITH l WHERE NOT (l)-[:NAMES]->()
DELETE l
RETURN count(*) AS deleted_lemmas
