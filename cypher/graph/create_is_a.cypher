// One batch of missing child -> parent links; `instance` marks WordNet's instance hypernyms.
UNWIND $rows AS row
MATCH (child:Concept {wnid: row.child})
MATCH (parent:Concept {wnid: row.parent})
CREATE (child)-[:IS_A {instance: row.instance}]->(parent)
