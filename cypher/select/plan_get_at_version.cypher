// The catalogue's version now, and the stored plan $id if the caller's guess of the version
// ($version, which $id was derived from) is still current: a repeated request's one round trip
// (else the caller reads the version's own plan id next).
OPTIONAL MATCH (cat:CatalogueMeta {id: 'catalogue'})
WITH coalesce(cat.version, 0) AS version
OPTIONAL MATCH (p:Plan {id: $id}) WHERE version = $version
RETURN version, p.body AS body
