// Sizes of the SDAG.
CALL () { MATCH (c:Concept) RETURN count(c) AS concepts }
CALL () { MATCH (:Concept)-[r:IS_A]->(:Concept) RETURN count(r) AS is_a,
          sum(CASE WHEN r.instance THEN 1 ELSE 0 END) AS instance_of }
CALL () { MATCH (l:Lemma) RETURN count(l) AS lemmas }
CALL () { MATCH (c:Concept) WHERE c.source <> 'wordnet-3.0' RETURN count(c) AS added }
RETURN concepts, is_a, instance_of, lemmas, added
