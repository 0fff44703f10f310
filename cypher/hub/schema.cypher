// Catalogue schema: models, their heads, probe sets, and the catalogue's version counter.
CREATE CONSTRAINT model_id IF NOT EXISTS FOR (m:Model) REQUIRE m.id IS UNIQUE;
CREATE CONSTRAINT head_id IF NOT EXISTS FOR (h:Head) REQUIRE h.id IS UNIQUE;
CREATE CONSTRAINT probe_set_id IF NOT EXISTS FOR (p:ProbeSet) REQUIRE p.id IS UNIQUE;
CREATE CONSTRAINT catalogue_meta_id IF NOT EXISTS FOR (c:CatalogueMeta) REQUIRE c.id IS UNIQUE;
CREATE INDEX model_name IF NOT EXISTS FOR (m:Model) ON (m.name);
CREATE INDEX model_sha256 IF NOT EXISTS FOR (m:Model) ON (m.sha256);
CREATE INDEX head_model IF NOT EXISTS FOR (h:Head) ON (h.model_id);
CREATE INDEX labeled_score IF NOT EXISTS FOR ()-[r:LABELED]-() ON (r.score);
