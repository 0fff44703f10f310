// How many models carry measured labels, and how many are registered at all (a model's
// declared heads are candidates too, so selection needs at least one model).
MATCH (m:Model)
RETURN count(m.labelled_at) AS labelled, count(m) AS models
