"""The command line starts without the heavy libraries: building the parser and every
`--help` import none of torch, timm, scikit-learn, open_clip, numpy, the Neo4j driver or gRPC
(the command handlers import what they need). Checked in a fresh interpreter, since this
test process has imported them already. What it costs in seconds is measured by
`mllgraph bench select --hub ...` (reports/bench_select.md), not asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "timm", "sklearn", "open_clip", "numpy", "scipy", "neo4j", "grpc", "nltk")

# Every command's --help (argparse exits 0 after printing it), then what was imported.
PROBE = """
import contextlib, io, json, sys
from mllgraph.cli import COMMAND_MODULES, main
commands = [m.__name__.rsplit('.', 1)[1] for m in COMMAND_MODULES]
argvs = [['--help']] + [[c, '--help'] for c in commands] + [['classify', '--help']]
codes = []
for argv in argvs:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as e:
            codes.append(e.code)
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
print(json.dumps({'codes': codes, 'heavy': heavy, 'argvs': len(argvs)}))
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter over this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _probe() -> dict:
    out = _python("-c", PROBE, json.dumps(HEAVY))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_imports_no_heavy_library() -> None:
    result = _probe()
    assert result["codes"] == [0] * result["argvs"]  # every --help printed and exited 0
    assert result["heavy"] == [], f"--help imported {result['heavy']}"


def test_help_subprocess_prints_the_commands() -> None:
    out = _python("-m", "mllgraph", "--help")
    assert out.returncode == 0, out.stderr
    for command in ("select", "classify", "bench", "serve"):
        assert command in out.stdout


# A new-task `mllgraph select` in this process: selection's modules, and grounding's encoder
# on a few names. torch (2 s to import) is for running experts, not for choosing them.
SELECT_PROBE = """
import sys
import mllgraph.cli.select, mllgraph.select.run
from mllgraph.ground import embed
embed.default_embedder().encode(["sandal", "a photo of a tabby cat"])
print(sorted(m for m in ("torch", "timm", "open_clip") if m in sys.modules))
"""


def test_selection_and_its_text_encoder_import_no_torch() -> None:
    out = _python("-c", SELECT_PROBE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
