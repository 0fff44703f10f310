// Before adding a concept: which of its parents and children exist, whether the wnid or name
// is taken, and whether a child is an ancestor-or-self of a parent (that would be a cycle).
CALL () { MATCH (c:Concept) WHERE c.wnid = $wnid OR c.name = $name
          RETURN collect(c.wnid + ' (' + c.name + ')') AS taken }
CALL () { UNWIND $parents AS p OPTIONAL MATCH (c:Concept {wnid: p})
          RETURN collect(CASE WHEN c IS NULL THEN p END) AS missing_parents,
                 max(c.depth) AS max_parent_depth, min(c.depth) AS min_parent_depth }
CALL () { UNWIND $children AS ch OPTIONAL MATCH (c:Concept {wnid: ch})
          RETURN collect(CASE WHEN c IS NULL THEN ch END) AS missing_children }
CALL () { UNWIND $children AS ch
          MATCH (parent:Concept) WHERE parent.wnid IN $parents
          MATCH (:Concept {wnid: ch})<-[:IS_A*0..]-(parent)
          RETURN collect(DISTINCT ch) AS cyclic_children }
RETURN taken, missing_parents, missing_children, cyclic_children, min_parent_depth
