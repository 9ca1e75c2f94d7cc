#!/usr/bin/env bash
# The whole demo in one command, on a fresh machine: install, migrate, an admin user, the Paubox
# sandbox, a Celery worker with beat, the dev server, and demo messages whose dispositions change
# while you watch.
#   bash example_project/run.sh        (DEMO_PORT=8000 SANDBOX_PORT=8025 by default)
# It stops, saying why, when a port it needs is taken or a process it started exits; Ctrl-C stops
# the worker and beat first, then the sandbox, then the dev server.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEMO_PORT=${DEMO_PORT:-8000}
SANDBOX_PORT=${SANDBOX_PORT:-8025}
READY_SECONDS=${READY_SECONDS:-60}
STATE=example_project/.demo
# shellcheck source=example_project/lib.sh
source example_project/lib.sh

# Before anything else: a taken port would otherwise show up a minute later, as a success banner
# pointing at someone else's server.
require_free_port "$DEMO_PORT" "the dev server" DEMO_PORT
require_free_port "$SANDBOX_PORT" "the Paubox sandbox" SANDBOX_PORT
mkdir -p "$STATE"

if [ ! -x .venv/bin/python ]; then
    echo "==> Creating .venv"
    "$PYTHON" -m venv .venv
fi
echo "==> Installing django-paubox and the example project's needs"
.venv/bin/python -m pip install -q --upgrade pip
# django-celery-results: the result backend docs/celery.md recommends (task results in the admin);
# Redis's client when CELERY_BROKER_URL points at Redis.
NEEDS=("django-celery-results>=2.5")
case ${CELERY_BROKER_URL:-} in redis*) NEEDS+=("celery[redis]>=5.3") ;; esac
.venv/bin/python -m pip install -q -e ".[celery]" "${NEEDS[@]}"

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

# The ports were free a few seconds ago; make sure nothing took them meanwhile.
require_free_port "$DEMO_PORT" "the dev server" DEMO_PORT
require_free_port "$SANDBOX_PORT" "the Paubox sandbox" SANDBOX_PORT

# Stopped in reverse start order (lib.sh), so the worker and beat go first, while the sandbox
# and the dev server still answer them.
trap stop_children EXIT
trap 'echo; exit 130' INT
trap 'exit 143' TERM

echo "==> Starting the dev server on 127.0.0.1:${DEMO_PORT}"
"${MANAGE[@]}" runserver "127.0.0.1:${DEMO_PORT}" --noreload &
add_child "the dev server" $!

echo "==> Starting the Paubox sandbox on 127.0.0.1:${SANDBOX_PORT}"
"${MANAGE[@]}" paubox_sandbox --port "$SANDBOX_PORT" --api-username demo \
    --processing-seconds "${SANDBOX_PROCESSING_SECONDS:-8}" \
    --webhook-url "http://127.0.0.1:${DEMO_PORT}/paubox/webhook/${PAUBOX_WEBHOOK_SECRET}/" &
add_child "the Paubox sandbox" $!

# Mail goes through the transactional outbox: a real Celery worker (with beat, for receipt
# polling, sweeping and retention) sends it. The broker is kombu's filesystem transport, in
# $STATE/broker, unless CELERY_BROKER_URL says otherwise (e.g. redis://127.0.0.1:6379/0).
export EMAIL_BACKEND=${EMAIL_BACKEND:-django_paubox.backends.PauboxCeleryEmailBackend}
CELERY_LOG="$STATE/celery.log"
echo "==> Starting a Celery worker and beat (broker: ${CELERY_BROKER_URL:-filesystem}; log: $CELERY_LOG)"
printf '\n===== run.sh started the worker at %s =====\n' "$(date '+%Y-%m-%d %H:%M:%S')" >>"$CELERY_LOG"
log_start=$(($(wc -c <"$CELERY_LOG") + 1))
.venv/bin/celery -A example_project worker -B -l INFO -c 2 \
    --schedule "$STATE/celerybeat-schedule" >>"$CELERY_LOG" 2>&1 &
add_child "the Celery worker" $!
# The worker writes to its log, not to the terminal: show its last lines when it is the one that
# exited.
worker_log_tail() {
    [ "$EXITED_CHILD" = "the Celery worker" ] || return 0
    echo "       Its last lines in $CELERY_LOG:" >&2
    tail -c "+$log_start" "$CELERY_LOG" | tail -n 8 | sed 's/^/       | /' >&2
}

demo_ready() {
    if ! http_ok "$DEMO_PORT" /admin/login/; then
        NOT_READY="the dev server on 127.0.0.1:${DEMO_PORT}"
    elif ! http_ok "$SANDBOX_PORT" /_sandbox/health; then
        NOT_READY="the Paubox sandbox on 127.0.0.1:${SANDBOX_PORT}"
    elif ! tail -c "+$log_start" "$CELERY_LOG" | grep -q ' ready\.$'; then
        NOT_READY="the Celery worker (see $CELERY_LOG)"
    else
        return 0
    fi
    return 1
}
echo "==> Waiting for the three to answer (at most ${READY_SECONDS} s)"
if ! wait_until_ready "$READY_SECONDS" demo_ready; then
    worker_log_tail
    echo "The demo did not start: everything it started is being stopped." >&2
    exit 1
fi

echo "==> Sending demo messages"
"${MANAGE[@]}" send_demo_messages

cat <<INFO

  Admin:    http://127.0.0.1:${DEMO_PORT}/admin/django_paubox/message/
  Login:    admin / ${ADMIN_PASSWORD}
  Sandbox:  http://127.0.0.1:${SANDBOX_PORT}/   (the messages Paubox "received")
  Worker:   $CELERY_LOG   (task results: /admin/django_celery_results/taskresult/)
  Send more demo messages: http://127.0.0.1:${DEMO_PORT}/

  Dispositions move from "sent" to their final state within ~${SANDBOX_PROCESSING_SECONDS:-8} s, as
  the sandbox fires webhooks. Ctrl-C stops everything.
INFO

# Keep watching: a process that exits now ends the demo, and says which.
while check_children; do sleep 1; done
worker_log_tail
echo "The demo stopped: everything it started is being stopped." >&2
exit 1
