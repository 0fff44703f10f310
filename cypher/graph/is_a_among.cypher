// The IS_A edges (child -> parent) among a set of concepts, for drawing a neighbourhood.
// params: wnids (e.g. ['n04133789', 'n03380867'])
MATCH (a:Concept)-[:IS_A]->(b:Concept)
WHERE a.wnid IN $wnids AND b.wnid IN $wnids
RETURN a.wnid AS child, b.wnid AS parent
