#!/usr/bin/env bash
# Hubbub's rooms benchmark in one command (bench/README.md): installs what is missing, then
# runs bench/rooms_compare.py with every argument passed through. Safe to re-run: the bench
# venv (bench/.venv, from bench/requirements.txt) and each node_modules (npm ci, from its
# package-lock.json) are remade only when those files change; the project's .venv is
# made by scripts/install only if it cannot import hubbub.
set -euo pipefail
cd "$(dirname "$0")"

need() { command -v "$1" >/dev/null 2>&1 || { echo "rooms-bench.sh: '$1' is required${2:+ ($2)}" >&2; exit 1; }; }
need python3 "Python >= 3.11"
need node "Node.js >= 18"
need npm
need taskset "util-linux"

if ! ../.venv/bin/python -c 'import hubbub, asyncpg' >/dev/null 2>&1; then
  echo "rooms-bench.sh: installing Hubbub into .venv (scripts/install all)" >&2
  ../scripts/install all
fi

[ -x .venv/bin/python ] || { echo "rooms-bench.sh: creating bench/.venv" >&2; python3 -m venv .venv; }
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat .venv/.requirements.sha256 2>/dev/null || true)" != "$want" ]; then
  echo "rooms-bench.sh: installing bench/requirements.txt" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > .venv/.requirements.sha256
fi

for dir in rooms-loadgen peers; do
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$dir/node_modules/.lock.sha256" 2>/dev/null || true)" != "$want" ]; then
    echo "rooms-bench.sh: npm ci in bench/$dir" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" > "$dir/node_modules/.lock.sha256"
  fi
done

exec .venv/bin/python rooms_compare.py "$@"
