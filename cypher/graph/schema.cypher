// SDAG schema: one Concept per wnid, lemma lookup through Lemma nodes.
CREATE CONSTRAINT concept_wnid IF NOT EXISTS FOR (c:Concept) REQUIRE c.wnid IS UNIQUE;
CREATE CONSTRAINT lemma_key IF NOT EXISTS FOR (l:Lemma) REQUIRE l.key IS UNIQUE;
CREATE CONSTRAINT sdag_meta_id IF NOT EXISTS FOR (m:SdagMeta) REQUIRE m.id IS UNIQUE;
CREATE INDEX concept_name IF NOT EXISTS FOR (c:Concept) ON (c.name);
