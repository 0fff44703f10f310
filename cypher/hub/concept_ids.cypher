// Which of these wnids are concepts in the SDAG.
MATCH (c:Concept) WHERE c.wnid IN $wnids
RETURN collect(c.wnid) AS found
