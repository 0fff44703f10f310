// Models marked stale (new probe images touch their heads), by id.
MATCH (m:Model) WHERE m.stale = true
RETURN m.id AS model
ORDER BY model
