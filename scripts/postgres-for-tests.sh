#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL server for the test suite, or stop it.
#
#   bash scripts/postgres-for-tests.sh [start] [DIR]   # last stdout line: the SQLAlchemy URL
#   bash scripts/postgres-for-tests.sh stop [DIR]      # stop the server and delete DIR
#
# DIR defaults to $CONVEYOR_PG_DIR, else ${TMPDIR:-/tmp}/conveyor-pg. The port is the first free
# one from $CONVEYOR_PG_PORT (default 54329). When no server binaries exist, Debian's
# `postgresql` package is installed unless CONVEYOR_INSTALL_POSTGRES=0. When that is impossible
# (not root, no sudo) the script says why and exits 0 without a URL, so tests skip visibly.
#
# The cluster is for tests only: trust authentication, 127.0.0.1 only, fsync off. PostgreSQL
# refuses to run as root, so as root the server runs as the `postgres` system user.
# Progress goes to stderr; stdout carries only the URL.
set -euo pipefail

readonly DATABASE=conveyor_test
readonly MARKER=.conveyor-test-cluster # only a DIR holding this marker is ever deleted
readonly PORT_TRIES=50

log() { printf 'postgres-for-tests: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

action=start
case "${1:-}" in
start | stop)
    action=$1
    shift
    ;;
-h | --help)
    sed -n '2,14s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
esac
[[ $# -le 1 ]] || die "too many arguments: $*. Usage: $0 [start|stop] [DIR]"
dir=${1:-${CONVEYOR_PG_DIR:-${TMPDIR:-/tmp}/conveyor-pg}}
dir=$(realpath -m -- "$dir")
[[ $dir != / ]] || die "refusing to use '/' as the cluster directory; pass a dedicated DIR."
data=$dir/data

# The newest server installed by Debian's packages, else whatever initdb is on PATH.
find_bindir() {
    local initdb
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $initdb ]] || initdb=$(command -v initdb || true)
    [[ -n $initdb ]] && dirname -- "$initdb"
}

# Root-only commands: directly as root, else through passwordless sudo, else not at all.
# 9>&-: nothing we start may inherit the lock below (see as_pg); apt can start a server too.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@" 9>&-
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@" 9>&-
    else
        return 1
    fi
}

install_postgres() {
    if [[ ${CONVEYOR_INSTALL_POSTGRES:-1} == 0 ]]; then
        log "no PostgreSQL server binaries (no /usr/lib/postgresql/*/bin/initdb) and" \
            "CONVEYOR_INSTALL_POSTGRES=0; PostgreSQL tests will be skipped."
        rm -f -- "$dir.lock"
        exit 0
    fi
    if ! as_root true; then
        log "no PostgreSQL server binaries, and installing them needs root or passwordless sudo." \
            "Run 'sudo apt-get install postgresql', or set CONVEYOR_TEST_POSTGRES_URL to a" \
            "server you have; PostgreSQL tests will be skipped."
        rm -f -- "$dir.lock"
        exit 0
    fi
    log "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >&2
    # The package also creates its own "main" cluster; we leave it alone and make ours.
    as_root apt-get install -y -qq --no-install-recommends postgresql >&2
}

# As root, the server and its tools run as `postgres` (created if missing); else as ourselves.
# 9>&-: the server must not inherit the lock below, or it would hold it for its whole life.
if [[ $EUID -eq 0 ]]; then
    run_user=postgres
    as_pg() { (cd / && runuser -u "$run_user" -- "$@" 9>&-); }
else
    run_user=$(id -un)
    as_pg() { (cd / && "$@" 9>&-); }
fi

ensure_run_user() {
    [[ $EUID -eq 0 ]] || return 0
    id -u "$run_user" >/dev/null 2>&1 && return 0
    log "creating system user '$run_user'"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash "$run_user"
}

# Prints the PID of the postmaster serving $data when it is alive, else nothing.
running_pid() {
    local pid
    pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    # A stale pid file can name a PID that now belongs to another program, or a dead server
    # that nobody reaped (a zombie): check the name and the state in /proc/PID/stat.
    local _ comm state
    read -r _ comm state _ 2>/dev/null <"/proc/$pid/stat" || return 0
    [[ $comm == "(postgres)" && $state != [ZX] ]] && echo "$pid"
    return 0
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_ready() {
    local port=$1 i
    for ((i = 0; i < 60; i++)); do
        "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 && return 0
        sleep 0.5
    done
    return 1
}

# Deletes $dir, but only when it is empty or was made by this script.
remove_dir() {
    [[ -e $dir ]] || return 0
    if [[ -e $dir/$MARKER || -z $(ls -A -- "$dir") ]]; then
        rm -rf -- "$dir"
    else
        die "'$dir' exists but was not made by this script (no $MARKER); refusing to delete" \
            "it. Pass another DIR or remove it yourself."
    fi
}

stop_server() {
    local pid
    pid=$(running_pid)
    [[ -n $pid ]] || return 0
    log "stopping the server in $data (pid $pid)"
    as_pg "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null ||
        as_pg "$bindir/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null ||
        kill -KILL "$pid" 2>/dev/null || true
}

create_cluster() {
    local port=$1
    remove_dir
    mkdir -p -- "$dir"
    touch -- "$dir/$MARKER"
    [[ $EUID -ne 0 ]] || chown -R "$run_user:" "$dir"
    chmod 700 "$dir"
    as_pg test -w "$dir" ||
        die "user '$run_user' cannot write to '$dir' (a parent directory is closed to it)." \
            "Pass a DIR under /tmp, or set TMPDIR to a directory that user can reach."
    log "creating a cluster in $data"
    as_pg "$bindir/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync \
        >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        die "initdb failed (log above)."
    }
    # Throwaway data: trade durability for speed. No Unix socket: clients use TCP only.
    cat >>"$data/postgresql.conf" <<EOF

# conveyor test cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

start_server() {
    log "starting the server on 127.0.0.1:$1"
    as_pg "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >/dev/null || {
        tail -n 20 "$dir/server.log" >&2 || true
        die "the server in $data did not start (log above)."
    }
}

# Serialise runs that share a DIR (e.g. two pytest sessions): one creates, the others reuse.
mkdir -p -- "$(dirname -- "$dir")"
exec 9>"$dir.lock"
flock -w 600 9 || die "another run has held $dir.lock for 10 minutes; is it stuck?"

bindir=$(find_bindir || true)
if [[ $action == stop ]]; then
    [[ -z $bindir ]] || stop_server
    remove_dir
    rm -f -- "$dir.lock"
    log "stopped; removed $dir"
    exit 0
fi

if [[ -z $bindir ]]; then
    install_postgres
    bindir=$(find_bindir) || die "installed postgresql, but found no initdb under" \
        "/usr/lib/postgresql/*/bin."
fi
ensure_run_user

pid=$(running_pid)
port=
if [[ -n $pid ]]; then
    port=$(sed -n 4p "$data/postmaster.pid")
    if wait_ready "$port"; then
        log "reusing the server already running in $data (pid $pid)"
    else
        log "the server in $data (pid $pid) does not answer; recreating it"
        stop_server
        port=
    fi
fi
if [[ -z $port ]]; then
    # Anything not running (a half-made cluster, a crashed one) is rebuilt from scratch.
    first=${CONVEYOR_PG_PORT:-54329}
    [[ $first =~ ^[0-9]+$ ]] || die "CONVEYOR_PG_PORT='$first' is not a port number."
    port=$first
    while port_in_use "$port"; do
        ((port - first < PORT_TRIES)) || die "no free port in $first..$port; set CONVEYOR_PG_PORT."
        log "port $port is in use; trying $((port + 1))"
        port=$((port + 1))
    done
    create_cluster "$port"
    start_server "$port"
    wait_ready "$port" || die "the server on 127.0.0.1:$port does not answer pg_isready."
fi

exists=$("$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -XtAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")
[[ $exists == 1 ]] || "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DATABASE"
echo "postgresql+psycopg://postgres@127.0.0.1:$port/$DATABASE"
