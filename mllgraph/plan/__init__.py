"""The plan: the one contract between selection (which writes it) and inference (which reads
it), so both sides of it live here.

In: a selection request (`request`: the task's classes and options) and a combination
(`mllgraph.combine`). Out: the plan document (`document`: JSON with the classes, their
concepts, coverage and heads, and the combination rule's inputs; parsed back into a
`ParsedPlan`), and `apply`: a parsed plan applied to its models' logits (which rule scores
which image). Pure: no I/O.

Imports only `combine` and `mllgraph.errors`. Must not import graph, hub, ground, label,
select, reuse or anything above them.
"""
