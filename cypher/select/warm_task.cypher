// The selection service's warm-up task (`select.run.warm_up`): $limit concepts with probe images
// that measured labels point to, the most widely covered first; a selection over them at
// start-up has Neo4j plan the queries a request runs, and reads the pages they touch.
// params: limit
MATCH (p:ProbeSet)-[:PROBES]->(c:Concept)<-[:LABELED]-(h:Head)
WITH c, count(DISTINCT h.model_id) AS models
ORDER BY models DESC, c.wnid
LIMIT $limit
RETURN c.wnid AS wnid, coalesce(c.name, c.wnid) AS name
