// The SDAG's load record, or nothing if no load has completed.
OPTIONAL MATCH (m:SdagMeta {id: 'sdag'})
RETURN m {.*} AS meta
