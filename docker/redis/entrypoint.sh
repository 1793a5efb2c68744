#!/bin/sh
# Redis for the Celery executor (docker-compose.yml), started with one ACL user per party:
#   hub            the hub's Airflow services: every key and channel, no admin commands;
#   bridge_<code>  one agency's bridge worker: its own Celery queue (bridge_<code>, with its
#                  priority lists and its own unacked keys bridge_<code>.unacked*), the binding
#                  of that queue, and the Celery result keys; nothing of the hub's queue or any
#                  other agency's, so it can neither read another party's task messages (each
#                  carries that task's Execution API token) nor put a task on another queue;
#   default        off: no unauthenticated access.
# Passwords come from the environment (.env), are checked (set, long, distinct, a safe
# alphabet) and are written only into an ACL file readable by the redis user alone; nothing is
# echoed. Codes: JOINEDUP_BRIDGE_CODES (lower case, space separated); the password of code
# <c> is REDIS_BRIDGE_<C>_PASSWORD (upper case).
set -euf  # -f: no globbing of the codes list
umask 077

die() {
    echo "redis entrypoint: $*" >&2
    exit 1
}

check_password() {  # name value
    case "$2" in
        "") die "$1 is not set" ;;
        *[!A-Za-z0-9_.-]*) die "$1 may hold only A-Z a-z 0-9 _ . - (use openssl rand -hex 32)" ;;
    esac
    [ "${#2}" -ge 32 ] || die "$1 must be at least 32 characters (use openssl rand -hex 32)"
}

acl_dir="${JOINEDUP_REDIS_ACL_DIR:-/tmp/joinedup-redis}"
mkdir -p "$acl_dir"
acl="$acl_dir/users.acl"

hub_pw="${REDIS_HUB_PASSWORD:-}"
check_password REDIS_HUB_PASSWORD "$hub_pw"
codes="${JOINEDUP_BRIDGE_CODES:-}"
[ -n "$codes" ] || die "JOINEDUP_BRIDGE_CODES is not set"

{
    echo "user default off resetpass resetkeys resetchannels -@all"
    echo "user hub on >$hub_pw ~* &* +@all -@admin -flushall -flushdb"
} > "$acl.new"

seen=" $hub_pw "
for code in $codes; do
    case "$code" in
        *[!a-z]* | "" | ?????????*) die "bridge code '$code' must be 1-8 lower-case letters" ;;
    esac
    var="REDIS_BRIDGE_$(echo "$code" | tr a-z A-Z)_PASSWORD"
    eval "pw=\${$var:-}"
    check_password "$var" "$pw"
    case "$seen" in
        *" $pw "*) die "$var is the same as another Redis password; each party needs its own" ;;
    esac
    seen="$seen$pw "
    q="bridge_$code"
    # [^a-z0-9_] after the queue name: kombu's priority lists (bridge_<c>\x06\x16<n>) and
    # this worker's unacked keys, never another queue whose name merely starts the same.
    # Scripts: redis-py's lock (kombu's unacked mutex); Redis checks the keys they touch
    # against this user's patterns. No SCAN/RANDOMKEY: other parties' key names.
    echo "user $q on >$pw resetkeys resetchannels ~$q ~$q[^a-z0-9_]* ~_kombu.binding.$q" \
        "~_kombu.binding_permanent.$q" \
        "~celery-task-meta-* &celery-task-meta-* -@all +@connection +@read +@write" \
        "+@transaction +publish +eval +evalsha +script|load -@dangerous -@admin -scan" \
        "-randomkey"
done >> "$acl.new"
mv "$acl.new" "$acl"

if [ "$#" -eq 0 ]; then
    set -- redis-server
fi
exec "$@" --aclfile "$acl"
