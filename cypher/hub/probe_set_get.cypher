// One probe set, or nothing.
MATCH (p:ProbeSet {id: $id})-[:PROBES]->(c:Concept)
RETURN p {.*, wnid: c.wnid, concept: c.name} AS probe_set
