#!/usr/bin/env bash
# The whole demo in one command, on a fresh machine: install, migrate, an admin user, the Paubox
# sandbox, the dev server, and demo messages whose dispositions change while you watch.
#   bash example_project/run.sh        (DEMO_PORT=8000 SANDBOX_PORT=8025 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
DEMO_PORT=${DEMO_PORT:-8000}
SANDBOX_PORT=${SANDBOX_PORT:-8025}
STATE=example_project/.demo
mkdir -p "$STATE"

if [ ! -x .venv/bin/python ]; then
    echo "==> Creating .venv"
    "$PYTHON" -m venv .venv
fi
echo "==> Installing django-paubox and the example project's needs"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[celery]"

secret() { .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(24))"; }
[ -s "$STATE/webhook-secret" ] || secret > "$STATE/webhook-secret"
[ -s "$STATE/sandbox-key" ] || secret > "$STATE/sandbox-key"
[ -s "$STATE/admin-password" ] || secret > "$STATE/admin-password"

# Sandbox credentials only: nothing here can reach the real Paubox.
export PAUBOX_API_URL="http://127.0.0.1:${SANDBOX_PORT}/v1/"
export PAUBOX_API_USERNAME=demo
PAUBOX_API_KEY=$(cat "$STATE/sandbox-key")
PAUBOX_WEBHOOK_SECRET=$(cat "$STATE/webhook-secret")
export PAUBOX_API_KEY PAUBOX_WEBHOOK_SECRET
MANAGE=(.venv/bin/python example_project/manage.py)

echo "==> Migrating the SQLite database"
"${MANAGE[@]}" migrate --noinput -v 0
ADMIN_PASSWORD=$(cat "$STATE/admin-password")
DJANGO_SUPERUSER_PASSWORD="$ADMIN_PASSWORD" "${MANAGE[@]}" shell -c "
from django.contrib.auth import get_user_model
User = get_user_model()
if not User.objects.filter(username='admin').exists():
    User.objects.create_superuser('admin', 'admin@clinic.example', '$ADMIN_PASSWORD')
"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # Up to 10 s for warm shutdowns (the Celery worker finishes its tasks)...
    for _ in $(seq 1 50); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && return 0
        sleep 0.2
    done
    # ...then stop what still hangs (embedded beat can), its children first.
    for pid in "${pids[@]}"; do
        pkill -KILL -P "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT INT TERM

echo "==> Starting the Paubox sandbox on 127.0.0.1:${SANDBOX_PORT}"
"${MANAGE[@]}" paubox_sandbox --port "$SANDBOX_PORT" --api-username demo \
    --processing-seconds "${SANDBOX_PROCESSING_SECONDS:-8}" \
    --webhook-url "http://127.0.0.1:${DEMO_PORT}/paubox/webhook/${PAUBOX_WEBHOOK_SECRET}/" &
pids+=($!)

# Mail goes through the transactional outbox: a real Celery worker (with beat, for receipt
# polling, sweeping and retention) sends it. The broker is kombu's filesystem transport unless
# CELERY_BROKER_URL says otherwise (e.g. redis://127.0.0.1:6379/0).
export EMAIL_BACKEND=${EMAIL_BACKEND:-django_paubox.backends.PauboxCeleryEmailBackend}
echo "==> Starting a Celery worker and beat (broker: ${CELERY_BROKER_URL:-filesystem})"
.venv/bin/celery -A example_project worker -B -l INFO -c 2 \
    --schedule "$STATE/celerybeat-schedule" >"$STATE/celery.log" 2>&1 &
pids+=($!)

echo "==> Starting the dev server on 127.0.0.1:${DEMO_PORT}"
"${MANAGE[@]}" runserver "127.0.0.1:${DEMO_PORT}" --noreload &
pids+=($!)

for _ in $(seq 1 100); do
    if .venv/bin/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:${DEMO_PORT}/admin/login/', timeout=1)" 2>/dev/null \
        && .venv/bin/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:${SANDBOX_PORT}/', timeout=1)" 2>/dev/null; then
        break
    fi
    sleep 0.2
done

echo "==> Sending demo messages"
"${MANAGE[@]}" send_demo_messages

cat <<INFO

  Admin:    http://127.0.0.1:${DEMO_PORT}/admin/django_paubox/message/
  Login:    admin / ${ADMIN_PASSWORD}
  Sandbox:  http://127.0.0.1:${SANDBOX_PORT}/   (the messages Paubox "received")
  Worker:   $STATE/celery.log   (task results: /admin/django_celery_results/taskresult/)
  Send more demo messages: http://127.0.0.1:${DEMO_PORT}/

  Dispositions move from "sent" to their final state within ~${SANDBOX_PROCESSING_SECONDS:-8} s, as
  the sandbox fires webhooks. Ctrl-C stops everything.
INFO
wait "${pids[@]}"
