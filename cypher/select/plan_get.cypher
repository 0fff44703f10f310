// One stored plan's JSON body, or nothing.
MATCH (p:Plan {id: $id})
RETURN p.body AS body
