"""Emoji experts, each on one concept group of `concepts.tsv` (mammals, fruit, road vehicles,
...), one head per concept (several emoji of one concept are one class), on seeded augmented
rasters of given *training styles* only. Two kinds:

- small timm architectures trained from scratch at 64 px (``test_resnet``, ...);
- ``tf_efficientnet_lite0``: the builtin EfficientNet-Lite0's ImageNet backbone, frozen, with
  a new head trained on the group's images (:data:`PRETRAINED_ARCHS`). timm's
  ``tf_efficientnet_lite0`` is the same network as the builtin (TF "same" padding), parameter
  for parameter in order, so the expert is a plain timm model the registry loads like any
  other. It is how experts are usually made; a from-scratch 64-px model learns one style and
  carries little of it to another.

Leave-one-style-out needs experts that never saw the held-out style S: the training styles
go through `split.StyleSplit.guard` for every style outside them, and a source whose bytes
equal an outside style's source is dropped (as `split.write_probe_folders` does for probes);
:func:`training_leaks` says what would make a held-out image reachable from a training set.
:func:`style_plan` rotates, for a held-out S, the training styles and a probe style that is
neither S nor a training style, so probes, experts and task images never share a style.

Trained weights are cached under a key of (group and its emoji, arch, training styles, seed,
recipe) (:func:`cache_key`), so a rerun trains nothing. Each expert's JSON records its
training styles, the styles it never saw, and its accuracy on unseen augmentations of its
training styles (a sanity figure, not a claim about other styles).

Part of the emoji hub builder: imports `hub` and below (torch, timm), never `label`, `select`
or `reuse`; registration and labelling are in `hubs.emoji.build`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.hub.preprocess import InputSpec
from mllgraph.hub.workers import run_jobs
from mllgraph.hubs.emoji import augment, split
from mllgraph.hubs.emoji.catalogue import STYLES, Catalogue, check_style
from mllgraph.paths import write_atomic

CONCEPTS_FILE = Path(split.__file__).with_name("concepts.tsv")
MIN_CONCEPTS, MAX_CONCEPTS = 5, 40  # concepts per expert (issue #22)
STYLE_CODES = {"openmoji": "om", "fluent-flat": "ff", "fluent-modern": "fm", "twemoji": "tw"}

# timm archs that take 3-channel input at 32-128 px as built (no kwargs, so the generic
# loader rebuilds them from arch/num_classes/in_chans). Measured on one of 2 shared cores,
# group "fruit" (19 concepts, 640 images from fluent-flat + fluent-modern), 12 epochs, 64 px
# (48 px): seconds to train, accuracy on unseen augmentations of the training styles:
#   test_resnet       12 s (7 s) 0.96 | test_efficientnet  9 s (7 s) 0.80
#   test_mambaout      6 s (5 s) 0.82 | test_nfnet        24 s (15 s) 0.64
# Defaults: the two best of those figures per second. Under load, a 1,056-image group took
# test_resnet 36 s.
# Experts on a pretrained backbone: timm arch -> the builtin whose ImageNet weights it starts
# from (its backbone frozen, a new head trained; module doc).
PRETRAINED_ARCHS: dict[str, str] = {"tf_efficientnet_lite0": "efficientnet_lite0"}
EMOJI_ARCHS: tuple[str, ...] = (
    "test_resnet", "test_efficientnet", "test_mambaout", "test_nfnet", *PRETRAINED_ARCHS,
)  # fmt: skip
DEFAULT_ARCHS: tuple[str, ...] = ("test_resnet", "test_mambaout")
HEAD_STEPS = 300  # full-batch Adam steps of a pretrained expert's new head

# Rotation of held-out style -> (training styles, probe styles): the next style in this
# cycle gives the probes, the other two train the experts.
_CYCLE = ("openmoji", "fluent-flat", "fluent-modern", "twemoji")


@dataclass(frozen=True)
class Recipe:
    """How an emoji expert is trained (part of the cache key)."""

    epochs: int = 12
    per_emoji: int = 16  # training images per emoji and training style
    eval_per_emoji: int = 4  # unseen augmentations per emoji and style for the sanity figure
    size: int = 64  # input side (px) of the expert
    batch_size: int = 64
    lr: float = 3e-3

    def validate(self) -> Recipe:
        for name in ("epochs", "per_emoji", "eval_per_emoji", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"recipe {name} must be a positive int, got {value!r}")
        if self.batch_size < 2:
            raise InvalidArgument(f"recipe batch_size must be >= 2, got {self.batch_size}")
        if not 16 <= self.size <= 224:
            raise InvalidArgument(f"recipe size {self.size}: expected 16..224 px")
        if not (isinstance(self.lr, int | float) and 0 < self.lr < 1):
            raise InvalidArgument(f"recipe lr must be in (0, 1), got {self.lr!r}")
        return self

    def tag(self) -> str:
        return f"e{self.epochs}n{self.per_emoji}x{self.size}"

    def input_spec(self, arch: str | None = None) -> InputSpec:
        # Probe and task images are 224 px scenes; the spec resizes them (antialiased) to
        # `size`, and training images take exactly that path. A pretrained expert takes its
        # backbone's own input (`size` does not apply).
        if arch in PRETRAINED_ARCHS:
            from mllgraph.hub.loading import EFFICIENTNET_LITE

            return EFFICIENTNET_LITE[PRETRAINED_ARCHS[arch]].input_spec
        return InputSpec(
            size=self.size, resize="resize", mean=(0.5,) * 3, std=(0.5,) * 3, channels=3
        )


@dataclass(frozen=True)
class ConceptGroup:
    """One expert's classes: concepts of one group (or one part of a large group)."""

    name: str  # "fruit", or "mammals.1" for a part of a split group
    wnids: tuple[str, ...]  # head order
    names: tuple[str, ...]  # one class name per head (the concept's shortest emoji name)
    rows: tuple[split.ConceptRow, ...]  # the emoji drawn for these concepts


def read_groups(path: Path = CONCEPTS_FILE) -> dict[str, list[split.ConceptRow]]:
    """group -> its emoji rows, from a concepts file with a `group` column."""
    rows = {r.hexcode: r for r in split.read_concepts(path)}  # validates every row
    with Path(path).open(encoding="utf-8") as fh:
        reader = csv.DictReader((ln for ln in fh if not ln.startswith("#")), delimiter="\t")
        if "group" not in (reader.fieldnames or []):
            raise InvalidArgument(f"concepts file {path}: no column group in the header")
        out: dict[str, list[split.ConceptRow]] = {}
        for raw in reader:
            group = (raw.get("group") or "").strip()
            if not group:
                raise InvalidArgument(f"concepts file {path}: emoji {raw['hexcode']} has no group")
            out.setdefault(group, []).append(rows[raw["hexcode"].strip().upper()])
    return out


def plan_groups(
    by_group: dict[str, list[split.ConceptRow]],
    *,
    exclude: Iterable[str] = (),
    max_concepts: int = MAX_CONCEPTS,
    min_concepts: int = MIN_CONCEPTS,
) -> tuple[list[ConceptGroup], dict[str, str]]:
    """(expert groups, skipped group -> why). Concepts in `exclude` (wnids) are left out; a
    group of more than `max_concepts` is split into the fewest near-equal parts in wnid order
    (`mammals.1`, `mammals.2`); one of fewer than `min_concepts` is skipped."""
    if not 2 <= min_concepts <= max_concepts:
        raise InvalidArgument(f"concepts per expert {min_concepts}..{max_concepts}: bad range")
    excluded = set(exclude)
    planned, skipped = [], {}
    for group in sorted(by_group):
        rows = [r for r in by_group[group] if r.wnid not in excluded]
        names: dict[str, str] = {}
        for r in rows:
            if r.wnid not in names or len(r.name) < len(names[r.wnid]):
                names[r.wnid] = r.name
        wnids = sorted(names)
        if len(wnids) < min_concepts:
            skipped[group] = f"{len(wnids)} concepts (< {min_concepts})"
            continue
        parts = -(-len(wnids) // max_concepts)
        for p in range(parts):
            chunk = wnids[p * len(wnids) // parts : (p + 1) * len(wnids) // parts]
            keep = set(chunk)
            planned.append(
                ConceptGroup(
                    name=group if parts == 1 else f"{group}.{p + 1}",
                    wnids=tuple(chunk),
                    names=tuple(names[w] for w in chunk),
                    rows=tuple(r for r in rows if r.wnid in keep),
                )
            )
    return planned, skipped


def choose_groups(planned: Sequence[ConceptGroup], wanted: Iterable[str]) -> list[ConceptGroup]:
    """The planned groups named in `wanted` (a split group's name picks all its parts);
    InvalidArgument naming every name that matches none."""
    wanted = [w.strip() for w in wanted if w.strip()]
    if not wanted:
        raise InvalidArgument("groups: none given")
    chosen, unknown = [], []
    for w in wanted:
        hits = [g for g in planned if g.name == w or g.name.split(".")[0] == w]
        if not hits:
            unknown.append(w)
        chosen += [g for g in hits if g not in chosen]
    if unknown:
        known = sorted({g.name.split(".")[0] for g in planned})
        raise InvalidArgument(
            f"groups: no concept group {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )
    return chosen


def check_train_styles(styles: Iterable[str], held_out: str | None = None) -> tuple[str, ...]:
    """The training styles, sorted, each checked; every style outside them (and `held_out`,
    which must be outside) goes through the style split's guard."""
    chosen = tuple(sorted({check_style(s.strip()) for s in styles}))
    if not chosen:
        raise InvalidArgument("training styles: none given")
    outside = [s for s in STYLES if s not in chosen]
    if not outside:
        raise InvalidArgument("training styles: all styles given; leave one out for the tasks")
    if held_out is not None and check_style(held_out) not in outside:
        raise InvalidArgument(f"training styles {chosen}: they hold the held-out style {held_out}")
    for s in outside:
        split.split(s).guard(chosen, split.TRAIN)
    return chosen


def style_plan(held_out: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training styles, probe styles) for a held-out style: disjoint, neither holds it."""
    i = _CYCLE.index(check_style(held_out))
    probe = _CYCLE[(i + 1) % len(_CYCLE)]
    train = tuple(sorted(s for s in _CYCLE if s not in (held_out, probe)))
    return train, (probe,)


@dataclass(frozen=True)
class ExpertSpec:
    """One planned emoji expert."""

    group: ConceptGroup
    arch: str
    train_styles: tuple[str, ...]
    seed: int
    recipe: Recipe

    @property
    def name(self) -> str:
        return f"emoji-{self.group.name}-{self.arch}"

    @property
    def version(self) -> str:
        codes = ".".join(STYLE_CODES[s] for s in self.train_styles)
        return f"{codes}-{self.recipe.tag()}-s{self.seed}"


def plan_experts(
    groups: Sequence[ConceptGroup],
    archs: Sequence[str],
    train_styles: Iterable[str],
    *,
    seed: int = 0,
    recipe: Recipe = Recipe(),
    held_out: str | None = None,
) -> list[ExpertSpec]:
    """One expert per (group, arch); InvalidArgument before any work for a bad arch, style,
    seed or recipe."""
    unknown = [a for a in archs if a not in EMOJI_ARCHS]
    if unknown or not archs:
        raise InvalidArgument(
            f"archs: {', '.join(unknown) or 'none given'}; known: {', '.join(EMOJI_ARCHS)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgument(f"seed must be a non-negative int, got {seed!r}")
    styles = check_train_styles(train_styles, held_out)
    recipe.validate()
    return [ExpertSpec(g, a, styles, seed, recipe) for g in groups for a in dict.fromkeys(archs)]


def cache_key(spec: ExpertSpec) -> str:
    """What the weights depend on: the group (its concepts and emoji), arch, training styles,
    seed and recipe. Same inputs, same key; any change, another key."""
    data = {
        "group": spec.group.name,
        "concepts": list(spec.group.wnids),
        "emoji": sorted(r.hexcode for r in spec.group.rows),
        "arch": spec.arch,
        "train_styles": sorted(spec.train_styles),
        "seed": spec.seed,
        "recipe": asdict(spec.recipe),
        "augment": asdict(augment.Params()),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def expert_paths(out_dir: Path, spec: ExpertSpec) -> tuple[Path, Path]:
    """(<json>, <weights>) of a trained expert in the cache folder."""
    stem = f"{spec.name}-{cache_key(spec)}"
    return Path(out_dir) / f"{stem}.json", Path(out_dir) / f"{stem}.safetensors"


def sibling(json_path: Path, suffix: str) -> Path:
    """A file beside an expert's JSON (`.safetensors`, `.domain.npy`). Not `with_suffix`:
    names like `emoji-mammals.1-...` hold a dot of their own."""
    return json_path.with_name(json_path.name.removesuffix(".json") + suffix)


# -- training data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSet:
    images: np.ndarray  # uint8 (N, side, side, 3)
    labels: np.ndarray  # (N,) head index
    items: list[split.TaskImage]  # what each image is (style, emoji, seed, source hash)


def training_set(
    catalogue: Catalogue,
    group: ConceptGroup,
    train_styles: Sequence[str],
    *,
    per_emoji: int,
    seed: int,
    side: int = augment.SIDE,
    held_out: str | None = None,
) -> TrainingSet:
    """Augmented images of the group's emoji in `train_styles` only, from the training seed
    stream (`seed` picks the augmentations). Every style outside `train_styles` (which must
    include `held_out`) is guarded against, and sources with the bytes of an outside style's
    source are dropped."""
    styles = check_train_styles(train_styles, held_out)
    outside = [s for s in STYLES if s not in styles]
    style_split = split.split(outside[0])
    items = split.training_images(
        catalogue, group.rows, style_split, styles=styles, per_emoji=per_emoji, seed=seed,
        side=side,
    )  # fmt: skip
    barred = _outside_hashes(catalogue, group.rows, outside)
    items = [t for t in items if t.source_sha256 not in barred]
    head = {w: i for i, w in enumerate(group.wnids)}
    missing = [
        group.names[i] for i, w in enumerate(group.wnids) if w not in {t.wnid for t in items}
    ]
    if missing:
        raise InvalidArgument(
            f"group {group.name}: no training image of {', '.join(missing)} in {', '.join(styles)}"
        )
    return TrainingSet(
        np.stack([t.image for t in items]), np.array([head[t.wnid] for t in items]), items
    )


def _outside_hashes(
    catalogue: Catalogue, rows: Iterable[split.ConceptRow], outside: Iterable[str]
) -> set[str]:
    """Source hashes of every style outside the training ones, for the group's emoji."""
    out = set()
    for row in rows:
        sources = catalogue.get(row.hexcode).sources
        out |= {split.file_hash(sources[s]) for s in outside if s in sources}
    return out


def training_leaks(
    items: Iterable[split.TaskImage], held_out: str, catalogue: Catalogue
) -> list[str]:
    """What makes a held-out-style image reachable from a training set: an image of the
    held-out style, or one whose source has the bytes of a held-out-style source. Empty when
    the training set is clean (the check `split.leaks` makes for probes)."""
    held = {split.file_hash(e.sources[held_out]) for e in catalogue.with_style(held_out)}
    found = []
    for t in items:
        if t.style == held_out:
            found.append(f"{t.hexcode} seed {t.seed}: a training image in {held_out}")
        if t.source_sha256 in held:
            found.append(f"{t.hexcode} ({t.style}): its source has a {held_out} image's bytes")
    return found


# -- training ---------------------------------------------------------------------------------


def train_model(
    arch: str,
    data: TrainingSet,
    num_classes: int,
    recipe: Recipe,
    *,
    seed: int,
    device: str = "cpu",
) -> Any:
    """A timm `arch` trained from scratch on `data` (a pretrained arch: its new head only,
    :func:`train_head`); the eval-mode model. Deterministic for a seed on the CPU with a fixed
    thread count (the global RNG state is restored)."""
    import torch
    import torch.nn.functional as F

    from mllgraph.hub.loading import build_timm
    from mllgraph.hub.preprocess import preprocess

    if arch in PRETRAINED_ARCHS:
        return train_head(arch, data, num_classes, recipe, seed=seed, device=device)
    dev = torch.device(device)
    spec = recipe.input_spec()
    x_all = preprocess(data.images, spec, device=dev)
    y_all = torch.from_numpy(data.labels.astype(np.int64)).to(dev)
    n = x_all.shape[0]
    bs = min(recipe.batch_size, n)
    per_epoch = max(1, n // bs)  # a ragged last batch is dropped (BatchNorm on tiny maps)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_timm(arch, num_classes, 3).to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, total_steps=per_epoch * recipe.epochs, pct_start=0.15
        )
        for _ in range(recipe.epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            for b in range(per_epoch):
                idx = order[b * bs : (b + 1) * bs]
                loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        # Exact BatchNorm statistics: after few steps the running averages lag the weights.
        batches = [x_all[s : s + bs] for s in range(0, n, bs) if n - s >= 2]
        torch.optim.swa_utils.update_bn(batches, model)
    return model.eval()


def pretrained_backbone(arch: str) -> Any:
    """timm `arch` (eval mode, 1000 heads) with the ImageNet weights of its builtin
    (:data:`PRETRAINED_ARCHS`), copied parameter for parameter; FailedPrecondition when the
    two networks do not line up."""
    from mllgraph.hub.loading import build_timm, load_efficientnet_lite

    source, _, _ = load_efficientnet_lite(PRETRAINED_ARCHS[arch])
    model = build_timm(arch, 1000, 3)
    target = model.state_dict()
    names = [k for k in target if not k.endswith("num_batches_tracked")]
    values = [v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(names) != len(values) or any(
        target[k].shape != v.shape for k, v in zip(names, values, strict=True)
    ):
        raise FailedPrecondition(
            f"timm {arch} does not line up with the builtin {PRETRAINED_ARCHS[arch]}'s weights "
            "(another timm version?): train the experts with a from-scratch arch"
        )
    model.load_state_dict({**target, **dict(zip(names, values, strict=True))})
    return model.eval()


def train_head(
    arch: str, data: TrainingSet, num_classes: int, recipe: Recipe, *, seed: int,
    device: str = "cpu",
) -> Any:  # fmt: skip
    """A pretrained expert: `arch`'s frozen ImageNet backbone (:func:`pretrained_backbone`)
    and a new linear head on its pooled features, fitted full-batch (Adam, weight decay) on
    `data`. Deterministic for a seed on the CPU."""
    import torch
    import torch.nn.functional as F

    from mllgraph.hub.preprocess import preprocess

    dev = torch.device(device)
    model = pretrained_backbone(arch).to(dev)
    spec = recipe.input_spec(arch)
    with torch.no_grad():  # preprocessed in chunks: 224-px float batches are large
        feats = torch.cat(
            [
                model.forward_head(
                    model.forward_features(preprocess(data.images[s : s + 32], spec, device=dev)),
                    pre_logits=True,
                )
                for s in range(0, len(data.images), 32)
            ]
        )
    y = torch.from_numpy(data.labels.astype(np.int64)).to(dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.reset_classifier(num_classes)
        head = model.get_classifier().to(dev)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
        for _ in range(HEAD_STEPS):
            loss = F.cross_entropy(head(feats), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(model: Any, data: TrainingSet, recipe: Recipe, arch: str | None = None) -> float:
    import torch

    from mllgraph.hub.preprocess import preprocess

    spec = recipe.input_spec(arch)
    with torch.no_grad():
        pred = torch.cat(
            [
                model(preprocess(data.images[s : s + 64], spec)).argmax(1)
                for s in range(0, len(data.images), 64)
            ]
        )
    return float((pred.numpy() == data.labels).mean())


def train_experts(
    catalogue: Catalogue,
    specs: Sequence[ExpertSpec],
    out_dir: Path,
    *,
    held_out: str | None = None,
    num_threads: int | None = 1,
    log: Callable[[str], None] = print,
    workers: int = 1,
) -> list[Path]:
    """Train every spec not already in `out_dir` (the cache); the `<name>-<key>.json` paths.
    Images are made once per group and shared by its archs. `held_out`: a style the run
    holds out, checked against the training set (:func:`training_leaks`) before training.
    One torch thread by default: competing OpenMP threads cost several times on a small
    shared CPU. So with `workers` > 1, that many processes train groups at once, one
    thread each (`hub.workers`; the same weights as one after another)."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_group: dict[str, list[ExpertSpec]] = {}
    for spec in specs:
        by_group.setdefault(spec.group.name, []).append(spec)
    jobs = [
        _GroupJob(catalogue, tuple(todo), out_dir, held_out)
        for group_specs in by_group.values()
        if (todo := [s for s in group_specs if not _is_done(*expert_paths(out_dir, s))])
    ]
    if workers > 1 and len(jobs) > 1 and num_threads == 1:

        def logged(_i: int, lines: list[str]) -> None:
            for line in lines:
                log(line)

        run_jobs(_train_group_job, jobs, workers, on_done=logged)
    else:
        old_threads = torch.get_num_threads()
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        try:
            for job in jobs:
                _train_group(job.catalogue, job.specs, job.out_dir, job.held_out, log)
        finally:
            torch.set_num_threads(old_threads)
    return [expert_paths(out_dir, s)[0] for group in by_group.values() for s in group]


@dataclass(frozen=True)
class _GroupJob:
    """One group's experts to train, in a worker process (`hub.workers`)."""

    catalogue: Catalogue
    specs: tuple[ExpertSpec, ...]
    out_dir: Path
    held_out: str | None


def _train_group_job(job: _GroupJob) -> list[str]:
    """`_train_group` in a worker: its log lines come back to be printed by the parent."""
    lines: list[str] = []
    _train_group(job.catalogue, job.specs, job.out_dir, job.held_out, lines.append)
    return lines


def _is_done(json_path: Path, weights_path: Path) -> bool:
    if not (json_path.is_file() and weights_path.is_file()):
        return False
    try:
        json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # half-written: trained again
    return True


def _train_group(
    catalogue: Catalogue,
    specs: Sequence[ExpertSpec],
    out_dir: Path,
    held_out: str | None,
    log: Callable[[str], None],
) -> None:
    from mllgraph.combine.domain import thumbnails
    from mllgraph.hub.loading import save_weights
    from mllgraph.hub.store import sha256_file

    first = specs[0]
    group, recipe = first.group, first.recipe
    t0 = time.perf_counter()
    data = training_set(
        catalogue, group, first.train_styles, per_emoji=recipe.per_emoji, seed=first.seed,
        held_out=held_out,
    )  # fmt: skip
    # Unseen augmentations of the same sources: another base seed of the training stream.
    unseen = training_set(
        catalogue, group, first.train_styles, per_emoji=recipe.eval_per_emoji,
        seed=first.seed + 1_000_003, held_out=held_out,
    )  # fmt: skip
    if held_out is not None:
        found = training_leaks(data.items, held_out, catalogue)
        if found:
            raise InvalidArgument(f"group {group.name}: {'; '.join(found[:5])}")
    data_s = time.perf_counter() - t0
    domain_thumbs = thumbnails(list(data.images[:: max(1, len(data.images) // 2000)]))
    for spec in specs:
        json_path, weights_path = expert_paths(out_dir, spec)
        t = time.perf_counter()
        model = train_model(spec.arch, data, len(group.wnids), recipe, seed=spec.seed)
        train_s = time.perf_counter() - t
        acc = accuracy(model, unseen, recipe, spec.arch)
        save_weights(model, weights_path)
        np.save(sibling(json_path, ".domain.npy"), domain_thumbs.astype(np.float32))
        meta = {
            "name": spec.name,
            "version": spec.version,
            "cache_key": cache_key(spec),
            "arch": spec.arch,
            "num_classes": len(group.wnids),
            "in_chans": 3,
            "group": group.name,
            "wnids": list(group.wnids),
            "class_names": list(group.names),
            "emoji": sorted(r.hexcode for r in group.rows),
            "train_styles": list(spec.train_styles),
            "never_seen_styles": [s for s in STYLES if s not in spec.train_styles],
            "seed": spec.seed,
            "recipe": asdict(recipe),
            "input_spec": recipe.input_spec(spec.arch).to_dict(),
            # The ImageNet model whose backbone it reuses (frozen), or None: from scratch.
            "pretrained_from": PRETRAINED_ARCHS.get(spec.arch),
            "train_images": len(data.images),
            "heldout_accuracy": round(acc, 4),  # unseen augmentations, training styles
            "heldout_images": len(unseen.images),
            "data_seconds": round(data_s, 2),
            "train_seconds": round(train_s, 2),
            "weights_file": weights_path.name,
            "weights_sha256": sha256_file(weights_path),
        }
        # Written last and atomically: its presence marks a finished expert.
        write_atomic(json_path, (json.dumps(meta, indent=1) + "\n").encode())
        log(
            f"  trained {spec.name}@{spec.version}: {len(group.wnids)} concepts, "
            f"{len(data.images)} images, {train_s:.0f} s, accuracy on unseen augmentations "
            f"{acc:.3f}"
        )
