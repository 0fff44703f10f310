// One model's node, or nothing.
MATCH (m:Model {id: $id})
RETURN m {.*} AS model
