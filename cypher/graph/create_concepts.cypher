// One batch of concepts the graph lacks (the loader diffs first, so a re-run creates none;
// the wnid constraint refuses duplicates from a concurrent load).
UNWIND $rows AS row
CREATE (:Concept {wnid: row.wnid, name: row.name, lemmas: row.lemmas,
                  definition: row.definition, lexname: row.lexname, depth: row.depth,
                  source: row.source})
