// End a job's claim on its model (a no-op when another job holds it now).
// params: id, job
MATCH (m:Model {id: $id})
WHERE m.label_claim = $job
REMOVE m.label_claim, m.label_claim_until
RETURN count(m) AS released
