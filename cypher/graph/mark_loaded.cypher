// Written last by a load that verified the graph: a partial load has no record.
MERGE (m:SdagMeta {id: 'sdag'})
SET m.source = $source, m.concepts = $concepts, m.is_a = $is_a, m.lemmas = $lemmas,
    m.loaded_at = datetime()
