// The models among $ids that state an input domain (mllgraph.hub.domains): what selection's
// domain gate (mllgraph.select.estimates) loads their profiles by.
// params: ids
UNWIND $ids AS id
MATCH (m:Model {id: id})
WHERE m.domain_sha256 IS NOT NULL
RETURN m.id AS id, m.domain_sha256 AS domain_sha256
ORDER BY id
