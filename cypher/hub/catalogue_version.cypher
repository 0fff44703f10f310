// The catalogue's version: bumped by every registration, labelling and deletion of a model,
// every probe set added or removed and every user concept added or removed (in the same
// transaction as the change). Selection caches what it reads per version.
OPTIONAL MATCH (cat:CatalogueMeta {id: 'catalogue'})
RETURN coalesce(cat.version, 0) AS version
