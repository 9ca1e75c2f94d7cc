# Process helpers for run.sh, in a file of their own so that tests can call them
# (tests/test_demo.py): port checks, a readiness wait that notices a child dying, and a stop in
# reverse start order. Source it; it defines functions and two arrays, and runs nothing.

CHILD_PIDS=()
CHILD_NAMES=()

# port_in_use PORT: true when something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# require_free_port PORT WHAT VARIABLE: fail, saying so, when PORT is not a port number or is
# taken; VARIABLE is the environment variable that picks another one.
require_free_port() {
    local port=$1 what=$2 variable=$3
    if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
        echo "error: $variable=$port is not a port number (for $what)." >&2
        return 1
    fi
    if port_in_use "$port"; then
        echo "error: port $port, for $what, is already in use on 127.0.0.1." >&2
        if command -v ss >/dev/null; then
            ss -Hltnp "sport = :$port" 2>/dev/null | sed 's/^/       held by: /' >&2 || true
        fi
        echo "       Stop what listens there, or choose another port: $variable=<port>." >&2
        return 1
    fi
}

# add_child NAME PID: remember a process started in the background, for the checks and the stop.
add_child() {
    CHILD_NAMES+=("$1")
    CHILD_PIDS+=("$2")
}

# check_children: fail, naming it and its exit status, when a child is no longer running (its
# name is left in EXITED_CHILD).
EXITED_CHILD=""
check_children() {
    local i status
    for i in "${!CHILD_PIDS[@]}"; do
        if ! kill -0 "${CHILD_PIDS[$i]}" 2>/dev/null; then
            status=0
            wait "${CHILD_PIDS[$i]}" 2>/dev/null || status=$?
            EXITED_CHILD=${CHILD_NAMES[$i]}
            echo "error: ${CHILD_NAMES[$i]} exited (status $status)." >&2
            return 1
        fi
    done
}

# wait_until_ready SECONDS CHECK: run CHECK (a command or function) every half second until it
# succeeds; fail as soon as a child exits, or after SECONDS. CHECK may set NOT_READY to say what
# it is still waiting for.
NOT_READY=""
wait_until_ready() {
    local seconds=$1 check=$2 deadline
    deadline=$((SECONDS + seconds))
    while :; do
        check_children || return 1
        "$check" && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "error: not ready after ${seconds} s${NOT_READY:+: waiting for $NOT_READY}." >&2
            return 1
        fi
        sleep 0.5
    done
}

# http_ok PORT PATH: true when 127.0.0.1:PORT answers GET PATH with 200 (plain bash: no client
# to start twice a second).
http_ok() (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    IFS= read -r -t 5 status <&3 || exit 1
    [[ $status == HTTP/1.?" 200"* ]]
) 2>/dev/null

# stop_children [GRACE_SECONDS]: stop the children in reverse start order, each given up to
# GRACE_SECONDS (default 15) to finish its work before it and its own children are killed.
# Start the processes others depend on first (the dev server, the sandbox), and the ones that
# use them (the Celery worker) last: the worker then stops while the sandbox still answers.
stop_children() {
    local grace=${1:-15} i pid name waited
    # A second Ctrl-C does not cut the stop short (the worker takes it as "cold shutdown").
    trap '' INT
    for ((i = ${#CHILD_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${CHILD_PIDS[$i]} name=${CHILD_NAMES[$i]}
        kill -0 "$pid" 2>/dev/null || continue
        echo "==> Stopping $name"
        kill -TERM "$pid" 2>/dev/null || true
        waited=0
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((grace * 5)) ]; do
            sleep 0.2
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "    $name did not stop within ${grace} s: killed"
            pkill -KILL -P "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    CHILD_PIDS=()
    CHILD_NAMES=()
}
