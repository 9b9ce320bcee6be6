# shellcheck shell=bash
#
# Makes a PostgreSQL server available for HMS. Source this file, then call
#
#     hms_ensure_postgres
#
# On success it exports HMS_PG_SERVER_URL (a URL of the server without a database,
# e.g. postgres://postgres@127.0.0.1:5432) and returns 0; otherwise it prints why on
# stderr and returns non-zero. It tries, in this order:
#
#   a. the server of $DATABASE_URL, when that is set;
#   b. a server on 127.0.0.1:$HMS_PG_PORT (default 5432), as user postgres;
#   c. a private cluster in <repo>/.pgdata (or $HMS_PGDATA), made with the machine's
#      PostgreSQL binaries (installed with apt-get when missing, unless
#      HMS_NO_INSTALL=1), listening on 127.0.0.1 only, trust auth. A running one is
#      reused, a stopped one is started again.
#
# Settings (environment):
#   DATABASE_URL          use this server and nothing else
#   HMS_PG_PORT           port to probe and to give a new private cluster (5432)
#   HMS_PGDATA            data directory of the private cluster (<repo>/.pgdata)
#   HMS_NO_INSTALL=1      never install PostgreSQL with apt-get
#   HMS_PG_WAIT_SECONDS   how long to wait for a server to become ready (30)
#
# hms_stop_private_postgres stops the private cluster (never any other server).
#
# Safe under `set -euo pipefail`; changes no shell options of the caller.

# The repository root: this file lives in <repo>/scripts/lib.
HMS_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

_hms_pg_say() { printf 'postgres: %s\n' "$*" >&2; }

# Prints a URL with its password (if any) replaced by ***.
_hms_pg_redact() {
    local url=$1
    printf '%s' "$url" | sed -E 's#^([a-zA-Z]+://[^:/@]*):[^@/]*@#\1:***@#'
}

# Directory of the newest PostgreSQL server binaries (the one holding initdb), or
# nothing. With a version argument, that version's directory when it exists.
_hms_pg_bindir() {
    local want=${1:-} dir
    if [[ -n $want && -x /usr/lib/postgresql/$want/bin/initdb ]]; then
        printf '%s\n' "/usr/lib/postgresql/$want/bin"
        return 0
    fi
    dir=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' -printf '%h\n' 2>/dev/null |
        sort -V | tail -n 1)
    if [[ -n $dir ]]; then
        printf '%s\n' "$dir"
        return 0
    fi
    # Other layouts (initdb on PATH, or pg_config knows where it is).
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null) || dir=
        if [[ -n $dir && -x $dir/initdb ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    return 1
}

# Path of a PostgreSQL client tool (psql, pg_isready), or nothing.
_hms_pg_tool() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    if dir=$(_hms_pg_bindir) && [[ -x $dir/$name ]]; then
        printf '%s\n' "$dir/$name"
        return 0
    fi
    return 1
}

# Whether something listens on host:port (TCP connect within 3 s).
_hms_pg_port_open() {
    local host=$1 port=$2
    # shellcheck disable=SC2016 # $1 and $2 expand in the child bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# Whether host:port speaks the PostgreSQL protocol without any client tools: sends
# an SSLRequest, to which a PostgreSQL server answers with the single byte S or N.
_hms_pg_protocol_probe() {
    local host=$1 port=$2 reply
    # shellcheck disable=SC2016 # $1 and $2 expand in the child bash
    reply=$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "\000\000\000\010\004\322\026\057" >&3
        head -c 1 <&3' _ "$host" "$port" 2>/dev/null) || return 1
    [[ $reply == S || $reply == N ]]
}

# pg_isready's verdict on a server: 0 accepting, 1 starting up / rejecting,
# 2 no answer, 3 bad parameters. Arguments are passed to pg_isready. Without
# pg_isready, falls back to the protocol probe (needs -h HOST -p PORT arguments).
_hms_pg_isready() {
    local isready host="" port=""
    if isready=$(_hms_pg_tool pg_isready); then
        "$isready" -q -t 3 "$@"
        return
    fi
    while (($#)); do
        case $1 in
            -h) host=$2; shift 2 ;;
            -p) port=$2; shift 2 ;;
            *) shift ;;
        esac
    done
    [[ -n $host && -n $port ]] || return 3
    _hms_pg_protocol_probe "$host" "$port" && return 0
    return 2
}

# Waits until pg_isready accepts (arguments as for _hms_pg_isready), at most
# HMS_PG_WAIT_SECONDS (30) seconds. Returns pg_isready's last status.
_hms_pg_wait_ready() {
    local limit=${HMS_PG_WAIT_SECONDS:-30} waited=0 rc=0
    while :; do
        rc=0
        _hms_pg_isready "$@" || rc=$?
        ((rc == 0)) && return 0
        ((rc == 3)) && return 3
        ((waited >= limit)) && return "$rc"
        sleep 1
        waited=$((waited + 1))
    done
}

# Whether we can log in to the server (URL of a database) and run a query; true
# when psql is not installed (nothing to check with).
_hms_pg_can_login() {
    local url=$1 psql
    psql=$(_hms_pg_tool psql) || return 0
    PGCONNECT_TIMEOUT=5 "$psql" -X -w -q -At -d "$url" -c 'select 1' >/dev/null 2>&1
}

# Runs a command as the OS user that owns the private cluster: postgres when we are
# root (initdb refuses root), else ourselves.
_hms_pg_as_owner() {
    if ((EUID != 0)); then
        "$@"
        return
    fi
    # From /, which postgres can always enter (the caller's directory may be /root).
    (
        cd / || exit 1
        if command -v runuser >/dev/null 2>&1; then
            exec runuser -u postgres -- "$@"
        elif command -v setpriv >/dev/null 2>&1; then
            exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
        else
            printf -v cmd '%q ' "$@"
            exec su -s /bin/sh postgres -c "$cmd"
        fi
    )
}

_hms_pg_ensure_os_user() {
    ((EUID == 0)) || return 0
    id -u postgres >/dev/null 2>&1 && return 0
    _hms_pg_say "creating the OS user postgres (PostgreSQL refuses to run as root)"
    if command -v useradd >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
            --shell /bin/bash postgres
    elif command -v adduser >/dev/null 2>&1; then
        adduser --system --group --no-create-home --home /var/lib/postgresql \
            --shell /bin/bash postgres
    else
        _hms_pg_say "cannot create the OS user postgres: neither useradd nor adduser is installed"
        return 1
    fi
}

# Installs PostgreSQL with apt-get, when allowed and possible.
_hms_pg_install() {
    local -a sudo=()
    if [[ ${HMS_NO_INSTALL:-0} == 1 ]]; then
        _hms_pg_say "no PostgreSQL server binaries found, and HMS_NO_INSTALL=1 forbids installing them"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _hms_pg_say "no PostgreSQL server binaries found, and no apt-get to install them with; install PostgreSQL or set DATABASE_URL"
        return 1
    fi
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            _hms_pg_say "no PostgreSQL server binaries found; installing them needs root (or sudo without a password): run 'apt-get install postgresql' or set DATABASE_URL"
            return 1
        fi
    fi
    _hms_pg_say "installing PostgreSQL with apt-get (apt-get update; apt-get install -y postgresql) ..."
    if ! ${sudo[@]+"${sudo[@]}"} apt-get update -qq >&2; then
        _hms_pg_say "apt-get update failed"
        return 1
    fi
    if ! ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 </dev/null; then
        _hms_pg_say "apt-get install postgresql failed"
        return 1
    fi
    _hms_pg_bindir >/dev/null || {
        _hms_pg_say "PostgreSQL was installed but its server binaries (initdb) were not found"
        return 1
    }
}

# Uses the server on 127.0.0.1:port as user postgres when it answers and lets us in.
# Returns 0 (exported HMS_PG_SERVER_URL), 1 (nothing there), 2 (the port is taken by
# something we cannot use).
_hms_pg_try_local() {
    local port=$1 what=$2 rc=0
    _hms_pg_isready -h 127.0.0.1 -p "$port" -U postgres -d postgres || rc=$?
    if ((rc == 1)); then
        _hms_pg_say "PostgreSQL at 127.0.0.1:$port is starting up; waiting for it"
        rc=0
        _hms_pg_wait_ready -h 127.0.0.1 -p "$port" -U postgres -d postgres || rc=$?
    fi
    if ((rc != 0)); then
        _hms_pg_port_open 127.0.0.1 "$port" && return 2
        return 1
    fi
    if ! _hms_pg_can_login "postgres://postgres@127.0.0.1:$port/postgres"; then
        _hms_pg_say "PostgreSQL at 127.0.0.1:$port answers but does not let user postgres in without a password; not using it"
        return 2
    fi
    export HMS_PG_SERVER_URL="postgres://postgres@127.0.0.1:$port"
    local datadir
    datadir=$(_hms_pg_private_datadir)
    if [[ $(_hms_pg_private_port "$datadir" 2>/dev/null) == "$port" ]]; then
        what="the private PostgreSQL cluster in $datadir (running)"
    fi
    _hms_pg_say "using $what at $HMS_PG_SERVER_URL"
    return 0
}

# Data directory of the private cluster: $HMS_PGDATA, else <repo>/.pgdata, unless we
# are root and user postgres cannot reach the repository (a checkout under /root,
# say): then a directory under /var/tmp named after the repository.
_hms_pg_private_datadir() {
    local dir
    if [[ -n ${HMS_PGDATA:-} ]]; then
        dir=$HMS_PGDATA
        [[ $dir == /* ]] || dir="$PWD/$dir"
        printf '%s\n' "$dir"
        return 0
    fi
    dir="$HMS_REPO_ROOT/.pgdata"
    if ((EUID == 0)) && id -u postgres >/dev/null 2>&1 && ! _hms_pg_owner_can_reach "$dir"; then
        dir="/var/tmp/hms-pgdata-$(printf '%s' "$HMS_REPO_ROOT" | cksum | cut -d' ' -f1)"
    fi
    printf '%s\n' "$dir"
}

# Whether the private cluster's data directory is reachable by its owner (postgres
# must be able to traverse every parent directory when we are root).
_hms_pg_owner_can_reach() {
    local dir=$1
    ((EUID == 0)) || return 0
    _hms_pg_as_owner test -x "$(dirname "$dir")" 2>/dev/null
}

# Port the running private cluster listens on (from postmaster.pid), or nothing.
_hms_pg_private_port() {
    local datadir=$1
    [[ -r $datadir/postmaster.pid ]] || return 1
    sed -n 4p "$datadir/postmaster.pid"
}

# Starts (or reuses, or creates) the private cluster.
_hms_pg_private() {
    local want_port=$1 datadir bindir version port rc log

    if ! bindir=$(_hms_pg_bindir); then
        _hms_pg_install || return 1
        # Debian's package starts a cluster of its own on 5432: maybe it is usable.
        rc=0
        _hms_pg_try_local "$want_port" "PostgreSQL" || rc=$?
        ((rc == 0)) && return 0
        bindir=$(_hms_pg_bindir) || return 1
    fi
    _hms_pg_ensure_os_user || return 1
    datadir=$(_hms_pg_private_datadir)
    if [[ -z ${HMS_PGDATA:-} && $datadir != "$HMS_REPO_ROOT/.pgdata" ]]; then
        _hms_pg_say "user postgres cannot reach $HMS_REPO_ROOT; keeping the private cluster in $datadir instead"
    fi
    if ! _hms_pg_owner_can_reach "$datadir"; then
        _hms_pg_say "user postgres cannot reach $(dirname "$datadir"); choose another HMS_PGDATA"
        return 1
    fi
    # An existing cluster needs the binaries of its own major version.
    if [[ -r $datadir/PG_VERSION ]]; then
        version=$(cat "$datadir/PG_VERSION")
        bindir=$(_hms_pg_bindir "$version")
        if [[ ! -x $bindir/postgres || $("$bindir/postgres" -V 2>/dev/null) != *" $version"* ]]; then
            _hms_pg_say "the cluster in $datadir is PostgreSQL $version, but only $("$bindir/postgres" -V 2>/dev/null) is installed; remove $datadir to start afresh"
            return 1
        fi
    fi

    # Running already? Reuse it.
    if _hms_pg_as_owner "$bindir/pg_ctl" status -D "$datadir" >/dev/null 2>&1; then
        port=$(_hms_pg_private_port "$datadir") || port=
        if [[ -n $port ]] && _hms_pg_wait_ready -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
            export HMS_PG_SERVER_URL="postgres://postgres@127.0.0.1:$port"
            _hms_pg_say "using the private PostgreSQL cluster in $datadir (running) at $HMS_PG_SERVER_URL"
            return 0
        fi
        _hms_pg_say "the private PostgreSQL cluster in $datadir runs but does not answer on 127.0.0.1:${port:-?}; see $datadir/server.log"
        return 1
    fi

    # Create it when missing.
    if [[ ! -e $datadir/PG_VERSION ]]; then
        if [[ -d $datadir && -n $(ls -A "$datadir" 2>/dev/null) ]]; then
            _hms_pg_say "$datadir exists, is not empty and holds no PostgreSQL cluster; move it away or set HMS_PGDATA"
            return 1
        fi
        _hms_pg_say "starting a private PostgreSQL cluster in $datadir (initdb with $bindir) ..."
        mkdir -p "$datadir" || return 1
        if ((EUID == 0)); then
            chown postgres: "$datadir" || return 1
        fi
        chmod 700 "$datadir" || return 1
        if ! log=$(_hms_pg_as_owner "$bindir/initdb" -D "$datadir" -U postgres --auth=trust \
            -E UTF8 --locale=C 2>&1); then
            printf '%s\n' "$log" >&2
            _hms_pg_say "initdb failed in $datadir"
            return 1
        fi
        # Our own settings, appended (the last setting of a name wins).
        local sockdir="$datadir"
        # Unix socket paths are limited to ~107 bytes; go without one for deep paths.
        ((${#datadir} > 80)) && sockdir=""
        if ! _hms_pg_as_owner tee -a "$datadir/postgresql.conf" >/dev/null <<EOF

# Added by scripts/lib/postgres.sh (HMS private cluster)
listen_addresses = '127.0.0.1'
unix_socket_directories = '${sockdir//\'/\'\'}'
max_connections = 200
EOF
        then
            _hms_pg_say "could not write $datadir/postgresql.conf"
            return 1
        fi
    else
        _hms_pg_say "starting the stopped private PostgreSQL cluster in $datadir ..."
        # Files made by root in it would keep postgres from starting.
        if ((EUID == 0)); then
            chown -R postgres: "$datadir" || return 1
        fi
    fi

    # Choose a port: the wanted one, or the next free one when something else has it.
    port=$want_port
    while _hms_pg_port_open 127.0.0.1 "$port"; do
        port=$((port + 1))
        if ((port > want_port + 20)); then
            _hms_pg_say "ports $want_port to $port on 127.0.0.1 are all taken"
            return 1
        fi
    done
    ((port != want_port)) && _hms_pg_say "port $want_port is taken by something else; the private cluster listens on $port"

    # The server must not inherit the lock's descriptor (it would hold the lock).
    local started=0
    if [[ -n ${_HMS_PG_LOCKFD:-} ]]; then
        _hms_pg_as_owner "$bindir/pg_ctl" start -D "$datadir" -l "$datadir/server.log" \
            -w -t "${HMS_PG_WAIT_SECONDS:-30}" -o "-p $port" >/dev/null 2>&1 {_HMS_PG_LOCKFD}>&- &&
            started=1
    else
        _hms_pg_as_owner "$bindir/pg_ctl" start -D "$datadir" -l "$datadir/server.log" \
            -w -t "${HMS_PG_WAIT_SECONDS:-30}" -o "-p $port" >/dev/null 2>&1 && started=1
    fi
    if ((started == 0)); then
        _hms_pg_say "the private PostgreSQL cluster in $datadir did not start; the end of $datadir/server.log:"
        tail -n 15 "$datadir/server.log" >&2 2>/dev/null || true
        return 1
    fi
    if ! _hms_pg_wait_ready -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
        _hms_pg_say "the private PostgreSQL cluster in $datadir started but does not answer on 127.0.0.1:$port"
        return 1
    fi
    export HMS_PG_SERVER_URL="postgres://postgres@127.0.0.1:$port"
    _hms_pg_say "using the private PostgreSQL cluster in $datadir at $HMS_PG_SERVER_URL"
}

# Makes a PostgreSQL server available and exports HMS_PG_SERVER_URL.
hms_ensure_postgres() {
    local port=${HMS_PG_PORT:-5432} rc lockfile

    # a. The server of DATABASE_URL.
    if [[ -n ${DATABASE_URL:-} ]]; then
        local scheme rest authority server hostport host dport
        scheme=${DATABASE_URL%%://*}
        if [[ $scheme == "$DATABASE_URL" || ( $scheme != postgres && $scheme != postgresql ) ]]; then
            _hms_pg_say "DATABASE_URL is not a postgres:// URL: $(_hms_pg_redact "$DATABASE_URL")"
            return 1
        fi
        rest=${DATABASE_URL#*://}
        authority=${rest%%/*}
        authority=${authority%%\?*}
        server="$scheme://$authority"
        # Host and port, for the checks without client tools.
        hostport=${authority##*@}
        if [[ $hostport == \[* ]]; then
            host=${hostport%%]*}
            host=${host#[}
            dport=${hostport#*]}
            dport=${dport#:}
        else
            host=${hostport%%:*}
            dport=${hostport#"$host"}
            dport=${dport#:}
        fi
        host=${host:-localhost}
        dport=${dport:-5432}
        rc=0
        if _hms_pg_tool pg_isready >/dev/null; then
            _hms_pg_isready -d "$DATABASE_URL" || rc=$?
            if ((rc == 1)); then
                _hms_pg_say "PostgreSQL at $(_hms_pg_redact "$server") is starting up; waiting for it"
                rc=0
                _hms_pg_wait_ready -d "$DATABASE_URL" || rc=$?
            fi
        else
            _hms_pg_isready -h "$host" -p "$dport" || rc=$?
        fi
        if ((rc != 0)); then
            _hms_pg_say "DATABASE_URL is set, but no PostgreSQL answers at $(_hms_pg_redact "$server"); start it, or unset DATABASE_URL to use a local one"
            return 1
        fi
        export HMS_PG_SERVER_URL="$server"
        _hms_pg_say "using PostgreSQL at $(_hms_pg_redact "$server") (from DATABASE_URL)"
        return 0
    fi

    # b. A server on 127.0.0.1:port, unless that is our own private cluster.
    rc=0
    _hms_pg_try_local "$port" "PostgreSQL" || rc=$?
    ((rc == 0)) && return 0

    # c. The private cluster. Serialise concurrent callers (scripts/run and
    #    scripts/test at once) while it is created or started.
    _HMS_PG_LOCKFD=""
    if command -v flock >/dev/null 2>&1; then
        lockfile="${TMPDIR:-/tmp}/hms-pg-$(printf '%s' "$(_hms_pg_private_datadir)" | cksum | cut -d' ' -f1).lock"
        if exec {_HMS_PG_LOCKFD}>>"$lockfile"; then
            flock -w 120 "$_HMS_PG_LOCKFD" || _hms_pg_say "could not lock $lockfile; going on without"
        else
            _HMS_PG_LOCKFD=""
        fi
    fi
    rc=0
    _hms_pg_private "$port" || rc=$?
    if [[ -n $_HMS_PG_LOCKFD ]]; then
        exec {_HMS_PG_LOCKFD}>&-
        _HMS_PG_LOCKFD=""
    fi
    if ((rc != 0)); then
        _hms_pg_say "no PostgreSQL server is available: set DATABASE_URL to one, or let this script install PostgreSQL (run as root, without HMS_NO_INSTALL=1)"
    fi
    return "$rc"
}

# Stops the private cluster, if it runs. Never touches any other server.
hms_stop_private_postgres() {
    local datadir bindir version
    datadir=$(_hms_pg_private_datadir)
    [[ -r $datadir/PG_VERSION ]] || return 0
    version=$(cat "$datadir/PG_VERSION")
    bindir=$(_hms_pg_bindir "$version") || return 1
    if _hms_pg_as_owner "$bindir/pg_ctl" status -D "$datadir" >/dev/null 2>&1; then
        _hms_pg_as_owner "$bindir/pg_ctl" stop -D "$datadir" -m fast -w >/dev/null &&
            _hms_pg_say "stopped the private PostgreSQL cluster in $datadir"
    fi
}
