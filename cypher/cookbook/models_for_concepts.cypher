// Models that cover the most of a list of concepts (labelled on the concept or a
// descendant at score >= $min_score): the shortlist a task of these classes starts from.
// params: wnids (e.g. ['n04133789', 'n04199027', 'n02773037']), min_score (e.g. 0.3)
UNWIND $wnids AS w
MATCH (:Concept {wnid: w})<-[:IS_A*0..]-(c:Concept)<-[l:LABELED]-(h:Head)<-[:HAS_HEAD]-(m:Model)
WHERE l.score >= $min_score
WITH m, w, max(l.score) AS best
WITH m, count(w) AS covered, round(avg(best), 3) AS mean_best, collect(w) AS concepts
RETURN m.id AS model, m.arch AS arch, covered, mean_best, concepts
ORDER BY covered DESC, mean_best DESC, model
LIMIT 20
