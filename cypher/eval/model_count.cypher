// Models in the catalogue, and how many of them are labelled (benchmarks).
MATCH (m:Model)
RETURN count(m) AS models, count(m.labelled_at) AS labelled
