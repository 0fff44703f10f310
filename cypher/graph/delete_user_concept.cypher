// Remove a user-added concept (WordNet's own concepts are never removed), with its lemma links;
// bump the catalogue version.
MATCH (c:Concept {wnid: $wnid}) WHERE c.source = 'user'
OPTIONAL MATCH (l:Lemma)-[:NAMES]->(c)
WITH c, collect(l) AS lemmas
DETACH DELETE c
WITH lemmas
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
WITH lemmas UNWIND lemmas AS l
WITH l WHERE NOT (l)-[:NAMES]->()
DELETE l
RETURN count(*) AS deleted_lemmas
