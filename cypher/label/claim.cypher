// Claim a model for one labelling job, atomically across threads and processes: the first
// SET takes the model node's write lock before anything is read, so two callers never both
// find the model free. A claim is granted when no live claim holds the model, the model was
// not labelled at or after $since_ms (a request made then is already served: `fresh`), and
// it is unlabelled or $relabel is asked.
// params: id, job, lease_s, relabel, since_ms
MATCH (m:Model {id: $id})
SET m.label_claim_lock = true
WITH m,
     m.label_claim IS NOT NULL AND m.label_claim_until > datetime() AS busy,
     m.labelled_at IS NOT NULL AS labelled,
     m.labelled_at IS NOT NULL AND m.labelled_at.epochMillis >= $since_ms AS fresh
WITH m, busy, labelled, fresh, NOT busy AND NOT fresh AND (NOT labelled OR $relabel) AS granted
FOREACH (_ IN CASE WHEN granted THEN [1] ELSE [] END |
  SET m.label_claim = $job, m.label_claim_until = datetime() + duration({seconds: $lease_s})
)
REMOVE m.label_claim_lock
RETURN granted, busy, labelled, fresh, m.label_claim AS holder,
       toString(m.labelled_at) AS labelled_at
