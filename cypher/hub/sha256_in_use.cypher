// How many models reference these weights (the store keeps a blob while any does).
MATCH (m:Model {sha256: $sha256}) RETURN count(m) AS models
