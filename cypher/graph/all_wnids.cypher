// Every concept id, as one list (one record decodes far faster than 82k).
MATCH (c:Concept) RETURN collect(c.wnid) AS wnids
