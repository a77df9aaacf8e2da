#!/bin/sh
# The provisioning Job of a managed PostgreSQL (RDS, Cloud SQL, an operator's cluster): for each
# service that uses it, a role and a database of its own, made over the network as the
# instance's administrator, with the same SQL an internal server's init container runs
# (postgres-provision.sql). Idempotent: each deploy whose users changed runs it again.
# $SECRETS/admin/{username,password}: the Secret the instance's owners made (catalog: external.secret);
# $SECRETS/users/<role>: each service's password (nexus deploy creates them once).
set -eu
secrets=${SECRETS:?}
config=${CONFIG:?}
: "${PGHOST:?}" "${PGPORT:?}"

# psql's \set reads a word: refuse what is not one rather than run something else
for file in "$secrets"/users/*; do
    [ -e "$file" ] || continue
    case "$(basename "$file")$(cat "$file")" in
    *[!A-Za-z0-9_]*) echo "provision: the password of $(basename "$file") is not alphanumeric; delete its Secret and deploy again" >&2; exit 1 ;;
    esac
done

PGUSER=$(cat "$secrets/admin/username")
PGPASSWORD=$(cat "$secrets/admin/password")
export PGUSER PGPASSWORD
for file in "$secrets"/users/*; do
    [ -e "$file" ] || continue
    printf '\\set role %s\n\\set password %s\n\\i %s/postgres-provision.sql\n' "$(basename "$file")" "$(cat "$file")" "$config"
done | psql -d "${PGDATABASE:-postgres}" -X -q -v ON_ERROR_STOP=1 -f -
echo "provision: $(ls "$secrets/users" | wc -l) services provisioned on $PGHOST:$PGPORT"
