#!/bin/sh
# Runs `airflow "$@"` after writing the SimpleAuthManager passwords file from AIRFLOW_ADMIN_USER and
# AIRFLOW_ADMIN_PASSWORD, so the login is the one in .env rather than a generated one printed to the log.
set -eu
if [ -n "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-}" ]; then
  python - <<'PY'
import json, os
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
with open(path, "w") as f:
    json.dump({os.environ["AIRFLOW_ADMIN_USER"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, f)
PY
fi
exec airflow "$@"
