// How many models carry measured labels (selection needs at least one).
MATCH (m:Model) WHERE m.labelled_at IS NOT NULL
RETURN count(m) AS labelled
