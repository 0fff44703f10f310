// Models filtered by name substring, arch, a concept they cover (a head declared or labelled
// on it or a descendant, at score >= $min_score), paged by id.
MATCH (m:Model)
WHERE ($name_part IS NULL OR toLower(m.name) CONTAINS toLower($name_part))
  AND ($arch IS NULL OR m.arch = $arch)
  AND ($after IS NULL OR m.id > $after)
  AND ($covers IS NULL OR EXISTS {
        MATCH (m)-[:HAS_HEAD]->(:Head)-[l:LABELED|DECLARED]->(:Concept)-[:IS_A*0..]->(:Concept {wnid: $covers})
        WHERE type(l) = 'DECLARED' OR l.score >= $min_score })
RETURN m {.*} AS model
ORDER BY m.id
LIMIT $limit
