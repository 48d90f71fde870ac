#!/usr/bin/env bash
# Usage: bash run.sh server [rusts-server options]   start the server (rusts.yml, ./data)
#        bash run.sh test [pytest options]            run the whole test suite
# Creates .venv with Python 3.11+ and installs what is needed on first use.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.rusts-installed
want=$(cat pyproject.toml | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi
cmd=${1:-server}
shift || true
case "$cmd" in
    server)
        exec .venv/bin/rusts-server "$@"
        ;;
    test)
        if ! command -v psql >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            (apt-get update -qq && apt-get install -y -qq postgresql-client) >/dev/null 2>&1 || true
        fi
        # the cluster tests start real NATS JetStream servers (tests/integration/cluster)
        if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ] && [ "$(id -u)" = 0 ] \
                && command -v apt-get >/dev/null; then
            (apt-get update -qq && apt-get install -y -qq nats-server) >/dev/null 2>&1 || true
        fi
        .venv/bin/ruff check --quiet engine actors protocols codecs tests perf
        exec .venv/bin/python -m pytest -q -p no:randomly "$@"
        ;;
    *)
        echo "usage: bash run.sh server|test [options]" >&2
        exit 2
        ;;
esac
