#!/usr/bin/env bash
# Regenerates the two dependency locks inside the images' own base (python:3.11-slim-bookworm), so that
# what is locked is exactly what `docker compose build` can install:
#   services/project/requirements.lock   the project image: `pip install .[all]`
#   services/airflow/requirements.lock   the Airflow image: Airflow 3 + postgres extra + docker and cncf.kubernetes providers
# Airflow's own constraints files are not on a package registry, hence a lock of our own.
# Usage: scripts/lock.sh [project|airflow]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=python:3.11-slim-bookworm
AIRFLOW_REQS='apache-airflow[postgres]==3.3.2 apache-airflow-providers-docker==4.6.1 apache-airflow-providers-cncf-kubernetes==10.25.0'
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}

lock() {  # lock NAME HEADER INSTALL-ARGS
  local name=$1 header=$2 install=$3 out="services/$1/requirements.lock"
  echo "locking $name ..." >&2
  docker run --rm -v "$PWD:/src:ro" -w /tmp -e TORCH_INDEX_URL="$TORCH_INDEX_URL" "$BASE" sh -euc "
    python -m venv /tmp/v >/dev/null && /tmp/v/bin/pip install -q --disable-pip-version-check -U pip >&2
    mkdir /tmp/project && cp -r /src/pyproject.toml /src/README.md /src/src /tmp/project/
    /tmp/v/bin/pip install -q --disable-pip-version-check \${TORCH_INDEX_URL:+--extra-index-url \$TORCH_INDEX_URL} $install >&2
    /tmp/v/bin/pip freeze --exclude-editable" \
  | grep -v '^mlops-sandbox' \
  | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' > "$out.new"
  { printf '%s\n' "$header"; cat "$out.new"; } > "$out"
  rm "$out.new"
  echo "wrote $out ($(grep -c '==' "$out") pins)" >&2
}

targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(project airflow)
for t in "${targets[@]}"; do
  case $t in
    project) lock project "# Lock for the project image: \`pip install .[all]\` on $BASE. Regenerate: make lock
# torch is pinned without its local label, so the CPU wheel (2.13.0+cpu) satisfies it where one is offered." \
      "/tmp/project[all]" ;;
    airflow) lock airflow "# Lock for the Airflow image: $AIRFLOW_REQS on $BASE.
# Airflow's constraints files are not on a package registry. Regenerate: make lock" "$AIRFLOW_REQS" ;;
    *) echo "unknown lock target: $t" >&2; exit 2 ;;
  esac
done
