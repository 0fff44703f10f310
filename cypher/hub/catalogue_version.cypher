// The catalogue's version: bumped by every registration, labelling and deletion.
OPTIONAL MATCH (cat:CatalogueMeta {id: 'catalogue'})
RETURN coalesce(cat.version, 0) AS version
