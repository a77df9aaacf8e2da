#!/bin/sh
# PostgreSQL's init container: create the cluster on first start, then (every start) a role and
# a database of its own for each service that uses this server. The passwords are files from
# Secrets (nexus deploy creates them): $SECRETS/admin and $SECRETS/users/<role>.
set -eu
secrets=${SECRETS:?}
config=${CONFIG:?}

# initdb names the cluster's owner after the current user, which an arbitrary uid (Pod Security
# "restricted" runs us as 10001) has not: the image's nss_wrapper lends it one.
if ! id -un >/dev/null 2>&1; then
    for lib in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
        if [ -e "$lib" ]; then
            printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$(id -u)" "$(id -g)" "$PGDATA" >/tmp/passwd
            export LD_PRELOAD="$lib" NSS_WRAPPER_PASSWD=/tmp/passwd NSS_WRAPPER_GROUP=/etc/group
            break
        fi
    done
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb -D "$PGDATA" -U postgres --auth=scram-sha-256 --pwfile="$secrets/admin" -E UTF8 --no-instructions
fi

# psql's \set reads a word: refuse what is not one rather than run something else (checked
# here: the exit status of the pipe's left side below is ignored)
for file in "$secrets"/users/*; do
    [ -e "$file" ] || continue
    case "$(basename "$file")$(cat "$file")" in
    *[!A-Za-z0-9_]*) echo "init: the password of $(basename "$file") is not alphanumeric; delete its Secret and deploy again" >&2; exit 1 ;;
    esac
done

# A server on a private socket only, for the provisioning; stopped again before the real one
# starts, and its socket's folder removed (a container's /tmp may outlive a restart).
socket=$(mktemp -d)
trap 'rmdir "$socket"' EXIT
pg_ctl -D "$PGDATA" -w -s -o "-c listen_addresses='' -k $socket -c hba_file=$config/postgres-hba.conf" start
trap 'pg_ctl -D "$PGDATA" -w -s -m fast stop; rmdir "$socket"' EXIT
PGPASSWORD=$(cat "$secrets/admin")
export PGPASSWORD
for file in "$secrets"/users/*; do
    [ -e "$file" ] || continue
    printf '\\set role %s\n\\set password %s\n\\i %s/postgres-provision.sql\n' "$(basename "$file")" "$(cat "$file")" "$config"
done | psql -h "$socket" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 -f -
trap - EXIT
pg_ctl -D "$PGDATA" -w -s -m fast stop
rmdir "$socket"
echo "init: $(ls "$secrets/users" | wc -l) services provisioned"
