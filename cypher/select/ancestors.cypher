// Every ancestor of each concept (what blocks a task's ancestor candidates is computed from
// them when candidates are cached per concept).
// params: wnids
UNWIND $wnids AS wnid
MATCH (c:Concept {wnid: wnid})
OPTIONAL MATCH (c)-[:IS_A*1..]->(a:Concept)
RETURN wnid, collect(DISTINCT a.wnid) AS ancestors
