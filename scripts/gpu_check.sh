#!/usr/bin/env bash
# One prepared check of the inference service on a GPU machine with no network and no Neo4j.
#
#   scripts/gpu_check.sh prepare [export-plan flags]   HERE (Neo4j up): writes build/gpu_check/
#       bundle/  plan.json, records.json, blobs/ (the plan's weights), images.npz (Fashion-MNIST
#                test images), reference.npy (CPU fp32 class probabilities of those images)
#       wheels/  cp312 wheels of grpcio, grpcio-health-checking, grpcio-reflection, protobuf
#                (the versions the generated code needs), timm (the Fashion experts' archs) and
#                efficientnet-lite-pytorch (code of the builtin experts; weights are in blobs/)
#       default flags: --classes sandal,sneaker,trouser,bag,dog (select + store a plan);
#       or e.g. --plan-id plan-... ; --images N (default 512)
#   scripts/gpu_check.sh run [gpu_check.py flags]      THERE (or here): serves the bundle on
#       CUDA (CPU fallback, said so), classifies through gRPC, compares with the CPU reference,
#       prints throughput and p50/p95 latency; exit 1 on a mismatch. Writes $OUT/gpu_check.json.
#
# Device tool: carry ["build/gpu_check"], command "bash scripts/gpu_check.sh run", timeout ~300.
# Python: $PYTHON, else python3 (there: the one with torch); here: PYTHON=.venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
B=build/gpu_check

case "${1:-}" in
prepare)
  shift
  PY="${PYTHON:-.venv/bin/python}"
  rm -rf "$B"
  mkdir -p "$B/wheels"
  if [ "$#" -eq 0 ]; then set -- --classes sandal,sneaker,trouser,bag,dog; fi
  "$PY" -m mllgraph.eval.bundle export-plan --out "$B/bundle" "$@"
  pins=$("$PY" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in
               ("grpcio", "grpcio-health-checking", "grpcio-reflection", "protobuf",
                "timm", "efficientnet-lite-pytorch")))
EOF
)
  # shellcheck disable=SC2086
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 -d "$B/wheels" $pins
  du -sh "$B"/* | sed 's/^/[prepare] /'
  ;;
run)
  shift
  PY="${PYTHON:-python3}"
  export PYTHONPATH="$PWD"
  if ls "$B"/wheels/*.whl >/dev/null 2>&1 \
    && "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    # Wheels are zip files: unpacking them is installing them (no pip, no network needed).
    "$PY" - "$B/site" "$B"/wheels/*.whl <<'EOF'
import sys, zipfile
for w in sys.argv[2:]:
    zipfile.ZipFile(w).extractall(sys.argv[1])
EOF
    export PYTHONPATH="$PWD/$B/site:$PWD"
    echo "[run] using the carried wheels: $(ls "$B/wheels" | tr '\n' ' ')"
  else
    echo "[run] using this Python's own gRPC/protobuf ($("$PY" -V 2>&1))"
  fi
  exec "$PY" scripts/gpu_check.py --bundle "$B/bundle" "$@"
  ;;
*)
  echo "usage: $0 prepare [export-plan flags] | run [gpu_check.py flags]" >&2
  exit 2
  ;;
esac
