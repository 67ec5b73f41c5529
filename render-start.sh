#!/usr/bin/env bash
# Start memvisor the way a Render web service (or any container platform) runs it.
#
# The server is exec'd, so it takes this script's PID: the SIGTERM that Render sends on every deploy
# and restart reaches uvicorn itself, which drains running tasks within DRAIN_TIMEOUT_S and exits 0.
# Render scans for an open port after start-up, so nothing slow happens before the exec.
#
# Environment (all optional; the app reads them itself, this script only checks and reports):
#   PORT             port to listen on (Render sets it; default 10000, Render's default)
#   DATA_DIR         SQLite database, upload spool, RAG store (default ./data; /data in the image)
#   DATABASE_URL     postgresql://... (e.g. Supabase); default SQLite under DATA_DIR. Instances
#                    sharing one PostgreSQL share one queue (see the README's "Many instances")
#   ROLE             all (default), api (HTTP only, runs no task) or worker (runs tasks, serves
#                    /healthz only): render.split.yaml runs one web service and one background worker
#   WEB_CONCURRENCY  forced to 1: each uvicorn worker would run its own supervisor against the one
#                    memory budget of the container
#   DISABLE_OCR, DISABLE_RAG, DISABLE_AGENTS
#                    true switches the built-in kind off (its requests get 503), which also keeps
#                    its memory estimate out of the budget
set -euo pipefail

log() {
    printf '%s render-start: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

# Relative paths (./.venv, ./data) and `python -m api` resolve against the checkout or /app.
cd "$(dirname "${BASH_SOURCE[0]}")"

find_python() {
    local venv
    for venv in "${VIRTUAL_ENV:-}" /opt/venv ./.venv; do
        if [[ -n "$venv" && -x "$venv/bin/python" ]]; then
            printf '%s\n' "$venv/bin/python"
            return 0
        fi
    done
    command -v python3
}

if ! PYTHON=$(find_python); then
    log "no Python found: set VIRTUAL_ENV, or install into /opt/venv or ./.venv"
    exit 1
fi

# Render routes traffic to the container's interface, never to its loopback; a HOST inherited from a
# login shell (some set it to the machine's name) would leave the port unreachable.
export HOST=0.0.0.0
export PORT="${PORT:-10000}"

if [[ -n "${WEB_CONCURRENCY:-}" && "$WEB_CONCURRENCY" != "1" ]]; then
    log "WEB_CONCURRENCY=$WEB_CONCURRENCY overridden to 1: each uvicorn worker would run its own" \
        "supervisor against the one memory budget of this container"
fi
export WEB_CONCURRENCY=1

# glibc gives each thread that allocates its own heap arena; capped, the API's and every worker's
# resident size stays close to what they use. The image sets it too; this covers other hosts.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"

export DATA_DIR="${DATA_DIR:-./data}"
if ! mkdir -p "$DATA_DIR" 2>/dev/null || [[ ! -w "$DATA_DIR" ]]; then
    log "DATA_DIR=$DATA_DIR cannot be created or written by uid $(id -u): a disk mounted there" \
        "must be writable by this user"
    exit 1
fi

switched_off=()
for switch in DISABLE_OCR DISABLE_RAG DISABLE_AGENTS; do
    value="${!switch:-false}"
    case "${value,,}" in
        1 | true | t | yes | y | on) switched_off+=("$switch") ;;
    esac
done
log "python $PYTHON; role ${ROLE:-all}; listening on $HOST:$PORT; DATA_DIR=$DATA_DIR;" \
    "kinds switched off: ${switched_off[*]:-none}"

# The app opens the database (migrating its tables, under a lock that concurrent boots share) before it
# binds the port, so a wrong DATABASE_URL stops the deploy with one line naming the URL (password
# masked) instead of serving a broken store.
exec "$PYTHON" -m api
