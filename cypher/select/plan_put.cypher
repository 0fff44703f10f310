// Store a plan (same id = same inputs on the same catalogue version = same plan).
MERGE (p:Plan {id: $id})
  ON CREATE SET p.body = $body, p.catalogue_version = $catalogue_version,
                p.created_at = datetime()
RETURN p.id AS id
