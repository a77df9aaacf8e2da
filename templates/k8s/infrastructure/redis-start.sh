#!/bin/sh
# Redis reads its ACL users from its configuration, each password as its SHA-256. The hashes
# are written here, at start, from the Secrets mounted under $SECRETS (one file per user, never
# in the ConfigMap), into a memory-backed volume; then the server replaces this shell.
set -eu
conf=${RUN:?}/redis.conf
cp "${CONFIG:?}/redis.conf" "$conf"
for file in "${SECRETS:?}"/*; do
    [ -e "$file" ] || continue
    user=$(basename "$file")
    hash=$(printf %s "$(cat "$file")" | sha256sum | cut -d' ' -f1)
    sed -i "s/@sha256:$user@/$hash/" "$conf"
done
if grep -q '@sha256:' "$conf"; then
    echo "start: no password for $(grep -o '@sha256:[^@]*@' "$conf" | head -1); is its Secret mounted?" >&2
    exit 1
fi
exec redis-server "$conf"
