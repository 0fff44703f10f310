// Evict stored plans: every plan beyond the newest $max_count, and among those every plan
// created more than $max_age_s seconds ago ($max_age_s null: no age limit).
MATCH (p:Plan)
WITH p ORDER BY p.created_at DESC
WITH collect(p) AS plans
WITH plans[$max_count..] + [p IN plans[..$max_count]
       WHERE $max_age_s IS NOT NULL
         AND p.created_at < datetime() - duration({seconds: $max_age_s})] AS evicted
FOREACH (p IN evicted | DETACH DELETE p)
RETURN size(evicted) AS evicted
