// Which of the given model ids name no Model (a sub-hub must name registered models).
UNWIND $ids AS id
OPTIONAL MATCH (m:Model {id: id})
WITH id, m WHERE m IS NULL
RETURN collect(id) AS missing
