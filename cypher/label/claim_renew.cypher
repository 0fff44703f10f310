// Extend a running job's claim on its model (the job still holds it).
// params: id, job, lease_s
MATCH (m:Model {id: $id})
WHERE m.label_claim = $job
SET m.label_claim_until = datetime() + duration({seconds: $lease_s})
RETURN count(m) AS renewed
