// The patch model's head names for the text encoder: a head's own label, else its declared
// concept's first lemma.
// params: id
MATCH (:Model {id: $id})-[:HAS_HEAD]->(h:Head)
OPTIONAL MATCH (h)-[:DECLARED]->(d:Concept)
RETURN h.index AS index,
       CASE WHEN coalesce(h.label, '') = '' THEN coalesce(d.lemmas[0], '') ELSE h.label END AS name
ORDER BY index
