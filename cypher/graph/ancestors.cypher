// All ancestors of a concept (DISTINCT: WordNet has multiple inheritance), root last.
MATCH (:Concept {wnid: $wnid})-[:IS_A*1..]->(a:Concept)
RETURN DISTINCT a.wnid AS wnid, a.name AS name, a.depth AS depth
ORDER BY depth DESC, name
