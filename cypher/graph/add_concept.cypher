// Create a user concept under its parents (and above optional children), with lemma links;
// bump the catalogue version (selection's candidates follow IS_A).
CREATE (c:Concept {wnid: $wnid, name: $name, lemmas: $lemmas, definition: $definition,
                   lexname: 'user', depth: $depth, source: 'user'})
WITH c
CALL (c) { UNWIND $parents AS p MATCH (parent:Concept {wnid: p}) CREATE (c)-[:IS_A {instance: false}]->(parent) }
CALL (c) { UNWIND $children AS ch MATCH (child:Concept {wnid: ch}) MERGE (child)-[:IS_A {instance: false}]->(c) }
CALL (c) { UNWIND $lemma_keys AS key MERGE (l:Lemma {key: key}) MERGE (l)-[:NAMES {sense: 99}]->(c) }
WITH c
MERGE (cat:CatalogueMeta {id: 'catalogue'})
  ON CREATE SET cat.version = 0
SET cat.version = cat.version + 1
RETURN c.wnid AS wnid, c.name AS name, c.depth AS depth
