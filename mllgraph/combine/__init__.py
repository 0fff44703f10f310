"""Combining heads: the pure maths shared by labelling, selection and inference.

In: head logits or probabilities (numpy arrays), class assignments, fitted parameters.
Out: class scores, fitted rules, and the data types a plan carries (`combination.Plan`).
No I/O: no Neo4j, no torch, no files; numpy, scipy and scikit-learn only.

- `rule`: the one per-class combination rule (calibration, weights, biases, fallback).
- `stacked`: the stacked rule (a linear softmax over all heads of the chosen models, fitted in
  closed form by `ridge`); `stacked_logistic`: its former fit, kept for comparisons.
- `screen`: which models the stacked rule should read.
- `conse`: the ConSE patch for uncovered classes.
- `domain`: an expert's input domain (which images its heads may speak about).
- `none_of_these`: the score that an image fits none of the task's classes.
- `combination`: the chosen heads per class and the rule's parameters (what CHCO returns).

Imports only `mllgraph.errors`. Must not import any other room.
"""
