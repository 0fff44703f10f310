"""`mllgraph bench select --hub NAME`: the path a real request runs, on a real hub.

The hub is the one at MLLGRAPH_HOME (the demo's, or one `mllgraph hub build` made), served
the way a person serves it: `mllgraph serve selection` and `mllgraph serve inference` as
processes of their own; this process is only their client. Two kinds of figures, written
next to the synthetic series in `reports/bench_select.{json,md}` (key `real_hubs.NAME`):

* SelectHeads through gRPC with the client's default options (stacked fits on, as
  `mllgraph select` and `classify` ask): new tasks never seen (class lists drawn from the
  concepts the hub covers, in their WordNet wordings, each list used once, so every request
  grounds, reads, runs CHCO and fits afresh) at 3 and 10 classes, then the same tasks
  repeated (the stored plan). p50/p95/mean, and for new tasks the plan's own split:
  grounding, cypher, load, chco, stacked, rest (= wall - those: plan store, protobuf, gRPC).
* Whole-process wall times of the commands a person types (`python -m mllgraph ...`, a
  fresh interpreter each run): `--help`, `select` of a new 3-class task and of a stored plan,
  `classify` of 10 images; each in this process's CLI over the local hub and with `--target`
  to the running services. min/median/max of N runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mllgraph.eval.bench.common import cpus, git_commit, percentiles
from mllgraph.settings import Settings

MIN_COVER_SCORE = 0.5  # a concept counts as covered with a measured label this good
PARTS = ("grounding", "cypher", "load", "chco", "stacked")
HALF_UNPROBED = "new_10_classes_half_unprobed"  # the series of half-unprobed new tasks
SERVICE_START_TIMEOUT_S = 300.0
COMMAND_TIMEOUT_S = 1200.0  # one whole command (a loaded machine is slow, not wrong)
# The 10 images `classify` gets: the photos suite's photos and two Fashion-MNIST test images.
CLASSIFY_PHOTOS = ("chelsea", "coffee", "motorcycle", "camera", "rocket", "astronaut")
CLASSIFY_PHOTOS += ("china", "flower")
CLASSIFY_FASHION = (5, 8)  # sandal, bag
CLASSIFY_CLASSES = "cat, coffee, motorbike, tripod, rocket, flower, sandal, handbag"


# -- tasks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    wnid: str
    wordings: tuple[str, ...]  # names a person would type for it (first one: its first lemma)
    probed: bool  # probe images attached: the stacked rule can be fitted for it


def wordings(wn: Any, wnid: str) -> tuple[str, ...]:
    """The concept's lemmas whose most frequent noun sense it is (so they ground to it),
    spaces for underscores; its first lemma always."""
    from mllgraph.graph.wordnet import lemma_key

    lemmas = wn.synsets[wnid].lemmas
    out = [lemmas[0]] + [
        lemma for lemma in lemmas[1:] if wn.lemma_index.get(lemma_key(lemma), [""])[0] == wnid
    ]
    return tuple(dict.fromkeys(x.replace("_", " ") for x in out))


def covered_concepts(graph: Any, wn: Any, min_score: float = MIN_COVER_SCORE) -> list[Concept]:
    rows = graph.read("eval/covered_concepts", min_score=min_score)
    return [
        Concept(r["wnid"], wordings(wn, r["wnid"]), bool(r["probed"]))
        for r in rows
        if r["wnid"] in wn.synsets
    ]


class TaskMaker:
    """New class lists, never the same list twice: probed concepts first (so the stacked rule
    is fitted, as for the Fashion tasks people ask), the rest from the other covered concepts;
    a wording per class, in a random order."""

    def __init__(self, concepts: Sequence[Concept], seed: int) -> None:
        self.probed = [c for c in concepts if c.probed]
        self.other = [c for c in concepts if not c.probed]
        self.rng = random.Random(seed)
        self.seen: set[tuple[str, ...]] = set()

    def make(self, k: int, probed_share: float = 1.0) -> list[str]:
        want = min(len(self.probed), round(k * probed_share))
        for _ in range(1000):
            picked = self.rng.sample(self.probed, want)
            picked += self.rng.sample(self.other, min(len(self.other), k - want))
            if len(picked) < k:
                raise ValueError(f"the hub covers {len(picked)} concepts, fewer than {k}")
            self.rng.shuffle(picked)
            names = tuple(self.rng.choice(c.wordings) for c in picked)
            if len({n.lower() for n in names}) == k and names not in self.seen:
                self.seen.add(names)
                return list(names)
        raise ValueError(f"no new {k}-class task left among the hub's covered concepts")


# -- the services, as processes of their own --------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_serving(address: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the service at {address} exited ({process.returncode})")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    raise TimeoutError(f"the service at {address} did not report SERVING in {timeout:.0f} s")


@contextlib.contextmanager
def served(
    env: dict[str, str], services: Sequence[str], log_dir: Path
) -> Iterator[tuple[dict[str, int], dict[str, float]]]:
    """`python -m mllgraph serve NAME --port P` for each name, until SERVING; yields
    ({name: port}, {name: seconds to SERVING}); ends them (SIGTERM, then SIGKILL) at exit."""
    ports = {name: free_port() for name in services}
    started: dict[str, subprocess.Popen[bytes]] = {}
    seconds: dict[str, float] = {}
    # SIGTERM (a bench stopped from outside) unwinds through `finally`: no service left behind.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for name in services:
            t = time.monotonic()
            with open(log_dir / f"{name}.log", "wb") as log:
                started[name] = subprocess.Popen(
                    [sys.executable, "-m", "mllgraph", "serve", name, "--port", str(ports[name])],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            _wait_serving(f"127.0.0.1:{ports[name]}", started[name], SERVICE_START_TIMEOUT_S)
            seconds[name] = round(time.monotonic() - t, 1)
        yield ports, seconds
    finally:
        for process in started.values():
            process.terminate()
        for process in started.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        signal.signal(signal.SIGTERM, previous)


# -- SelectHeads through gRPC -----------------------------------------------------------------


def select_series(
    client: Any,
    tasks: Sequence[list[str]],
    *,
    new: bool,
    seen: set[str] | None = None,
    budget_s: float = math.inf,
) -> dict[str, Any]:
    """SelectHeads for each task through `client` (the client's default options); wall time
    and, for `new` tasks, the plan's own split. A `new` task answered by a stored plan (one
    in `seen`, the plan ids this run got so far, or one made before the request started: an
    earlier run's at the same catalogue version) is not counted: `already_stored`. Stops
    after `budget_s` seconds (a shared machine: `cut_short` says so), one request at least."""
    seen = set() if seen is None else seen
    t0 = time.monotonic()
    cut_short = False
    import grpc

    from mllgraph.errors import MllgraphError

    wall: list[float] = []
    parts: dict[str, list[float]] = {k: [] for k in (*PARTS, "rest")}
    errors: list[str] = []
    stored = stacked_used = 0
    models: list[int] = []
    for i, names in enumerate(tasks):
        if i and time.monotonic() - t0 > budget_s:
            cut_short = True
            break
        started = time.time()
        try:
            plan = client.select(names)
        except (grpc.RpcError, MllgraphError) as e:
            errors.append(f"{names}: {e}"[:200])
            continue
        # created_at has whole seconds: a plan made before this second began is a stored one.
        made = plan.created_at.timestamp() if plan.created_at is not None else started
        if new and (plan.plan_id in seen or made < math.floor(started)):
            stored += 1
            continue
        seen.add(plan.plan_id)
        wall.append(plan.select_ms / 1000.0)
        if new:
            doc = plan.document
            timings = doc["timings_ms"]
            for k in PARTS:
                parts[k].append(timings.get(f"{k}_ms", 0.0) / 1000.0)
            parts["rest"].append(wall[-1] - sum(parts[k][-1] for k in PARTS))
            stacked_used += bool((doc.get("stacked") or {}).get("used"))
        models.append(len(plan.model_ids))
    asked = len(wall) + len(errors) + stored
    out: dict[str, Any] = {"requests": len(wall), "errors": len(errors), "asked": asked}
    if cut_short:
        out["cut_short_at_s"] = budget_s
    if errors:
        out["error_examples"] = errors[:3]
    if new:
        out["already_stored"] = stored
        out["stacked_rule_used"] = stacked_used
    if wall:
        out["grpc"] = percentiles(wall)
        if new:
            out.update({k: percentiles(v) for k, v in parts.items()})
        out["models_per_plan_mean"] = round(statistics.fmean(models), 2)
    return out


# -- whole processes --------------------------------------------------------------------------


def run_times(
    argvs: Sequence[Sequence[str]], env: dict[str, str], budget_s: float = math.inf
) -> dict[str, Any]:
    """Wall time of `python -m mllgraph ARGV` for each argv (one fresh process each); stops
    after `budget_s` seconds, one run at least (`cut_short_at_s`)."""
    seconds: list[float] = []
    failures: list[str] = []
    t0 = time.monotonic()
    cut_short = False
    for i, argv in enumerate(argvs):
        if i and time.monotonic() - t0 > budget_s:
            cut_short = True
            break
        t = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "mllgraph", *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            failures.append(f"timed out after {COMMAND_TIMEOUT_S:.0f} s")
            continue
        dt = time.perf_counter() - t
        if done.returncode != 0:
            failures.append(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
            continue
        seconds.append(dt)
    out: dict[str, Any] = {"runs": len(seconds), "failures": len(failures)}
    if cut_short:
        out["cut_short_at_s"] = budget_s
    if failures:
        out["failure_examples"] = failures[:2]
    if seconds:
        out.update(
            min_s=round(min(seconds), 3),
            median_s=round(statistics.median(seconds), 3),
            max_s=round(max(seconds), 3),
            seconds=[round(s, 3) for s in seconds],
        )
    return out


def classify_images(folder: Path, settings: Settings) -> list[Path]:
    """The 10 images `classify` is timed on, written as PNG files into `folder`."""
    from PIL import Image

    from mllgraph.eval.photos import load_photo
    from mllgraph.hubs.fashion import data as fashion

    paths = []
    for photo in CLASSIFY_PHOTOS:
        paths.append(folder / f"{photo}.png")
        Image.fromarray(load_photo(photo)).save(paths[-1])
    x, y = fashion.load_split("test", settings.fashion_mnist_dir)
    for cls in CLASSIFY_FASHION:
        paths.append(folder / f"fashion-{cls}.png")
        Image.fromarray(x[y == cls][0]).save(paths[-1])
    return paths


def command_argvs(
    make: TaskMaker, folder: Path, runs: int, target: bool, stored_task: Sequence[str]
) -> dict[str, tuple[list[list[str]], list[str] | None]]:
    """name -> (the runs' argvs, an argv run once first and not counted, or None): the
    commands a person types, over the local hub or with --target (then `_target`).
    `stored_task`: a task whose plan is stored already (run once first all the same)."""
    extra = ["--target", "127.0.0.1"] if target else []
    suffix = "_target" if target else ""
    stored = ["select", ", ".join(stored_task), *extra]
    classify = ["classify", str(folder), "--classes", CLASSIFY_CLASSES, *extra]
    new = [["select", ", ".join(make.make(3)), *extra] for _ in range(runs)]
    return {
        f"select_stored{suffix}": ([stored] * runs, stored),  # made once first
        f"classify_10{suffix}": ([classify] * runs, classify),  # its plan made once first
        f"select_new_3{suffix}": (new, None),
    }


# -- the benchmark ----------------------------------------------------------------------------


def bench_real_hub(
    settings: Settings, args: argparse.Namespace, save: Callable[[dict[str, Any]], Any] | None
) -> dict[str, Any]:
    """Measure the hub at MLLGRAPH_HOME as series `args.hub`; returns its figures, and hands
    them to `save` after every step (the report merge)."""
    from mllgraph import client as mc
    from mllgraph.errors import FailedPrecondition
    from mllgraph.graph import db, neo4j_server
    from mllgraph.graph.wordnet import load_nouns

    n_req = int(args.requests)
    runs = int(getattr(args, "runs", 5))
    budget_s = float(getattr(args, "series_budget_s", None) or math.inf)
    seed = int(args.seed) if args.seed else int(time.time())  # new tasks: a fresh seed
    figures: dict[str, Any] = {
        "home": str(settings.home),
        "commit": git_commit(),
        "seed": seed,
        "cpus": cpus(),
        "load_average": {"start": [round(x, 2) for x in os.getloadavg()]},
    }
    if settings.uses_local_neo4j:
        neo4j_server.start(settings)  # the services and the commands find it running
    wn = load_nouns(settings.wordnet_dir)
    with db.connect(settings, start_local=False) as graph:
        concepts = covered_concepts(graph, wn)
        counts = graph.read("eval/model_count")[0]
    if not any(c.probed for c in concepts):
        raise FailedPrecondition(
            f"the hub at {settings.home} covers no concept with probe images at quality "
            f">= {MIN_COVER_SCORE}: build one first (`mllgraph demo` or `mllgraph hub build`)"
        )
    figures["hub"] = {
        "models": counts["models"],
        "labelled_models": counts["labelled"],
        "covered_concepts": len(concepts),
        "probed_concepts": sum(c.probed for c in concepts),
    }
    figures["method"] = METHOD
    make = TaskMaker(concepts, seed)
    # The output cache off: `classify` sends the same 10 images every run, and these figures
    # are of a first classification (mllgraph.reuse.outputs).
    env = {
        **os.environ,
        "MLLGRAPH_HOME": str(settings.home),
        "MLLGRAPH_INFER_OUTPUT_CACHE_MB": "0",
    }
    # The probed concepts bound the task size with stacked fits (10 on the Fashion hubs).
    k_big = min(10, len(make.probed))

    def step(key: str, name: str, entry: dict[str, Any]) -> None:
        figures.setdefault(key, {})[name] = entry
        figures["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
        print(f"[bench select --hub {args.hub}] {name}: {json.dumps(entry)[:300]}", flush=True)
        if save is not None:  # after every step: a run cut short keeps what it measured
            save(figures)

    commands: dict[str, tuple[list[list[str]], list[str] | None]] = {}
    if runs > 0:
        commands["help"] = ([["--help"]] * runs, None)
        commands["select_help"] = ([["select", "--help"]] * runs, None)
    with (
        tempfile.TemporaryDirectory(prefix="bench-select-real-") as tmp,
        served(env, ("selection", "inference"), Path(tmp)) as (ports, start_s),
    ):
        figures["service_start_s"] = start_s
        target_env = {**env, **{f"MLLGRAPH_{n.upper()}_PORT": str(p) for n, p in ports.items()}}
        folder = Path(tmp) / "images"
        folder.mkdir()
        classify_images(folder, settings)

        def command(name: str) -> None:
            argvs, first = commands[name]
            where = target_env if name.endswith("_target") else env
            if first is not None:
                run_times([first], where)
            step("commands", name, run_times(argvs, where, budget_s))

        address = f"127.0.0.1:{ports['selection']}"
        with mc.Client(selection=address, settings=settings, timeout=1800) as client:
            seen: set[str] = set()
            # Warm the service's caches; its first task's plan is then the stored one.
            warm = [make.make(3) for _ in range(3)]
            select_series(client, warm, new=True, seen=seen, budget_s=budget_s)
            if runs > 0:
                for target in (True, False):
                    commands.update(command_argvs(make, folder, runs, target, warm[0]))
            for name in ("help", "select_help", "select_stored_target", "select_stored"):
                if name in commands:
                    command(name)
            # Cheap and decisive first, so a run cut short by a loaded machine has them.
            for k in dict.fromkeys((3, k_big)):
                ts = [make.make(k) for _ in range(n_req)]
                new = select_series(client, ts, new=True, seen=seen, budget_s=budget_s)
                step("select", f"new_{k}_classes", new)
                asked = ts[: new["asked"]]  # the tasks the new series reached, twice more
                step("select", f"repeated_{k}_classes", select_series(client, asked * 2, new=False))
            for name in ("classify_10_target", "select_new_3_target"):
                if name in commands:
                    command(name)
            mixed = [make.make(10, probed_share=0.5) for _ in range(n_req)]
            half = select_series(client, mixed, new=True, seen=seen, budget_s=budget_s)
            step("select", HALF_UNPROBED, half)
            for name in ("classify_10", "select_new_3"):
                if name in commands:
                    command(name)
    return figures


METHOD = {
    "services": "`python -m mllgraph serve selection` and `... serve inference` as processes "
    "of their own over the hub at `home` (its local Neo4j running); this process is only their "
    "client (mllgraph.client.Client, its default options: fit_params and allow_ancestor on)",
    "new_tasks": "class lists never asked before: concepts the hub covers with a measured label "
    f"of score >= {MIN_COVER_SCORE}, those with probe images first (so the stacked rule is "
    "fitted), a WordNet wording of each (a lemma whose first noun sense it is), in random "
    "order; 3 warm-up requests first (the service's caches of graph reads and probe outputs "
    "are warm, each task's grounding and fits are not)",
    "half_unprobed": "10 classes, half of them covered concepts without probe images (no "
    "stacked fit is possible then)",
    "repeated": "the new tasks again, twice: the stored plan (same names, same catalogue)",
    "split": "grounding/cypher/load/chco/stacked: the plan's own timings_ms; rest = the "
    "client's wall time minus those (plan store read and write, alternatives, JSON, gRPC)",
    "commands": "wall time of `python -m mllgraph ARGS` in a fresh process (= the console "
    "script), output captured; `_target`: with --target 127.0.0.1 to the running services; "
    "else the command's own in-process path over the local hub (Neo4j already running)",
}


def merge_report(out_dir: str | Path, name: str, figures: dict[str, Any]) -> Path:
    """Put `figures` under `real_hubs.NAME` of reports/bench_select.json, keeping everything
    else there (the synthetic series), and rewrite the real-hub section of the .md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_select.json"
    report = json.loads(path.read_text()) if path.exists() else {"benchmark": "select"}
    report.setdefault("real_hubs", {})[name] = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **figures,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    md = out / "bench_select.md"
    text = md.read_text() if md.exists() else "# bench select\n"
    section = markdown(report["real_hubs"])
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    md.write_text(text)
    return path


BEGIN = "<!-- real-hubs: written by `mllgraph bench select --hub NAME` -->"
END = "<!-- /real-hubs -->"
GOALS_MS = {"new": 300, "repeated": 20}  # p95 ms at 10 classes
GOALS_S = {"select_stored": 3.0, "select_new_3": 5.0, "help": 0.5}


def _ms(entry: dict[str, Any], part: str, key: str) -> str:
    value = (entry.get(part) or {}).get(key)
    return "-" if value is None else f"{value:,.0f}"


def markdown(hubs: dict[str, Any]) -> str:
    """The real-hub section of bench_select.md, from the JSON (all hubs measured so far)."""
    lines = [BEGIN, "## Real hubs: SelectHeads through gRPC, and whole commands", ""]
    for name, hub in hubs.items():
        info = hub.get("hub", {})
        lines += [
            f"### `{name}`: {info.get('models')} models, {info.get('covered_concepts')} covered "
            f"concepts ({info.get('probed_concepts')} with probe images)",
            "",
            f"Measured {hub.get('at')} at commit `{hub.get('commit')}` on {hub.get('cpus')} "
            f"CPU cores, load average {hub.get('load_average', {}).get('start')} at the start, "
            f"{hub.get('load_average', {}).get('end')} at the end; services up in "
            f"{hub.get('service_start_s')} s. Method: `method` in the JSON.",
            "",
            "| series | requests | p50 ms | p95 ms | mean ms | grounding p95 | cypher p95 "
            "| load p95 | chco p95 | stacked p95 | rest p95 | stacked used |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for series, e in hub.get("select", {}).items():
            lines.append(
                f"| {series} | {e.get('requests')} (errors {e.get('errors')}) "
                f"| {_ms(e, 'grpc', 'p50_ms')} | **{_ms(e, 'grpc', 'p95_ms')}** "
                f"| {_ms(e, 'grpc', 'mean_ms')} | "
                + " | ".join(_ms(e, p, "p95_ms") for p in (*PARTS, "rest"))
                + f" | {e.get('stacked_rule_used', '-')} |"
            )
        commands = hub.get("commands") or {}
        if commands:
            lines += [
                "",
                "| command (whole process) | runs | min s | median s | max s |",
                "|---|---|---|---|---|",
            ]
            for cmd, e in commands.items():
                lines.append(
                    f"| {cmd} | {e.get('runs')} (failed {e.get('failures')}) | {e.get('min_s')} "
                    f"| **{e.get('median_s')}** | {e.get('max_s')} |"
                )
        lines += ["", _goals(hub), ""]
    lines.append(END)
    return "\n".join(lines)


def _largest(select: dict[str, Any], kind: str) -> tuple[str, int] | None:
    """The `KIND_K_classes` series with the largest K (a hub with fewer than 10 probed
    concepts has its big series at fewer classes)."""
    sizes = [
        int(name.split("_")[1])
        for name in select
        if name.startswith(f"{kind}_") and name.endswith("_classes")
    ]
    return (f"{kind}_{max(sizes)}_classes", max(sizes)) if sizes else None


def _goals(hub: dict[str, Any]) -> str:
    """Each goal of issue #24 beside its figure: met or by how much it misses."""
    said = []
    select = hub.get("select") or {}
    judged = [(_largest(select, kind), goal) for kind, goal in GOALS_MS.items()]
    # A new 10-class task with unprobed classes is a new 10-class task too: judged the same.
    if HALF_UNPROBED in select:
        judged.append(((HALF_UNPROBED, 10), GOALS_MS["new"]))
    for found, goal in judged:
        p95 = select[found[0]].get("grpc", {}).get("p95_ms") if found else None
        if found and p95 is not None:
            verdict = "met" if p95 < goal else f"NOT met ({p95 / goal:.1f}x the goal)"
            said.append(f"{found[0]} p95 {p95:,.0f} ms (goal at 10 classes < {goal}): {verdict}")
    for cmd, goal_s in GOALS_S.items():
        median = ((hub.get("commands") or {}).get(cmd) or {}).get("median_s")
        if median is not None:
            verdict = "met" if median < goal_s else f"NOT met ({median / goal_s:.1f}x the goal)"
            said.append(f"{cmd} median {median} s (goal < {goal_s} s): {verdict}")
    return "Goals: " + ("; ".join(said) if said else "none measured") + "."
