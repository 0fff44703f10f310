// Which experts state an input domain (`mllgraph models domain`): on images unlike the ones
// described, their heads are set aside at inference. Models without one are trusted on every
// image.
MATCH (m:Model)
RETURN m.id AS model, m.domain_source IS NOT NULL AS has_domain, m.domain_source AS source,
       m.domain_images AS images, round(m.domain_threshold, 3) AS threshold
ORDER BY has_domain DESC, model
