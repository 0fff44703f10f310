// How many distinct concepts lie under a concept.
MATCH (:Concept {wnid: $wnid})<-[:IS_A*1..]-(d:Concept)
RETURN count(DISTINCT d) AS descendants
