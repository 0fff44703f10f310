#!/usr/bin/env bash
# Install everything mllgraph needs on a fresh Debian machine (idempotent, cached), then run
#   demo  — the main job end to end on the project-managed local Neo4j
#   test  — lint, the generated-code check and the whole test suite
# Re-runs reuse the virtual environment (.venv), the Maven cache and the Neo4j jars.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-}"
case "$what" in demo|test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac

# System packages: WordNet 3.0, Fashion-MNIST, a Java for Neo4j 5.26, Maven to fetch it,
# Chromium and its driver for the browser test of the web page.
need=()
for pkg in wordnet-base wordnet-sense-index dataset-fashion-mnist maven python3-venv chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# npm fetches the emoji world's packages (below); any Node.js install with npm will do.
command -v npm >/dev/null 2>&1 || need+=(npm)
if ! { java -version 2>&1 | grep -qE 'version "(17|21)' || ls /usr/lib/jvm/*-17-* /usr/lib/jvm/*-21-* >/dev/null 2>&1; }; then
  need+=(openjdk-17-jre-headless)
fi
if ((${#need[@]})); then
  echo "[setup] apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Python: one virtual environment, reinstalled only when pyproject.toml changes.
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.mllgraph-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch and its CUDA libraries take about 7 GB; a full disk otherwise fails deep inside pip.
  if ! ls -d .venv/lib/python3*/site-packages/torch >/dev/null 2>&1; then
    for dir in . "${TMPDIR:-/tmp}"; do
      free_gb=$(( $(df -Pk "$dir" | awk 'NR==2 {print $4}') / 1048576 ))
      if (( free_gb < 8 )); then
        echo "[setup] only ${free_gb} GB free on $(cd "$dir" && pwd) (the install needs about 8 GB there):" \
          "free some space, or point TMPDIR at a larger disk" >&2
        exit 1
      fi
    done
  fi
  # uv installs the same packages as pip about 4x faster (torch and its CUDA libraries: 33 s
  # against 143 s here); pip's own index settings are passed on, and pip takes over if uv
  # cannot be had or fails.
  echo "[setup] installing mllgraph and its dependencies into .venv (the first time: torch)"
  uv_args=()
  index="${PIP_INDEX_URL:-$(.venv/bin/python -m pip config get global.index-url 2>/dev/null || true)}"
  [ -n "$index" ] && uv_args+=(--index-url "$index")
  [ -n "${PIP_EXTRA_INDEX_URL:-}" ] && uv_args+=(--extra-index-url "$PIP_EXTRA_INDEX_URL")
  [ -n "${PIP_FIND_LINKS:-}" ] && uv_args+=(--find-links "$PIP_FIND_LINKS")
  if .venv/bin/python -m pip install -q uv \
    && .venv/bin/uv pip install -q --python .venv/bin/python "${uv_args[@]}" -e ".[dev]"; then
    :
  else
    echo "[setup] uv unavailable or failed: installing with pip (a few minutes)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[dev]"
  fi
  echo "$want" > "$stamp"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

# The emoji world's pinned npm packages, integrity-checked, into the emoji cache
# (MLLGRAPH_EMOJI_CACHE, default ~/.cache/mllgraph/emoji); a no-op once there.
.venv/bin/mllgraph hub emoji fetch

if [ "$what" = demo ]; then
  exec .venv/bin/mllgraph demo
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m mllgraph.protos --check
exec .venv/bin/python -m pytest -q -ra --durations=15
