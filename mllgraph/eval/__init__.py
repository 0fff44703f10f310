"""Evaluation, benchmarks and the demo. The library never imports this package; only the CLI
(its `bench` and `demo` commands) does.

- `tasks`: task suites (JSON) of class names with their Fashion-MNIST ground truth.
- `evaluate`: MLL, the baselines and the references on a suite (`run_suite`; what each method
  is and sees: its module doc), built on `evalset` (evaluation images, cached logits),
  `scoring` (the inference rule, for every method scored from a plan), `baselines` (random,
  single, uniform, hindsight), `references` (stack-all, summed ImageNet subtrees, the
  expert-recipe model, ConSE) and `supervised` (a CNN on all labelled train images);
  `summary`: means with task-bootstrap intervals, shares of the supervised reference, the
  dev − test difference, and the tables of a run.
- `pipeline` pieces: `evaluate.LibraryPipeline` (in-process) and `grpc_pipeline` (the
  three services).
- `zeroshot`: `mllgraph bench zeroshot`: hub build, suite, hub-size study, report.
- `emoji_suite` (+ `tasks_emoji.json`): the emoji task suite, dev/test split by concept group;
  `emoji_world`: `mllgraph bench zeroshot --world emoji`, leave one art style out.
- `gap_study`: CHCO's heuristic against its exact solver on synthetic problems.
- `bundle`: `python -m mllgraph.eval.bundle export-plan` (a plan bundle for the GPU check).
- `bench/`: one module per benchmark (`mllgraph bench NAME`).
- `demo`: README command (1).

May import every room but the CLI. Graph statements: `cypher/eval/`.
"""
