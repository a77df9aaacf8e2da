#!/bin/sh
# nats-server reads each user's password from a $VARIABLE in its configuration: the variables
# are set here from the Secrets mounted under $SECRETS (one file per variable), then the server
# replaces this shell.
set -eu
for file in "${SECRETS:?}"/*; do
    [ -e "$file" ] || continue
    export "$(basename "$file")=$(cat "$file")"
done
exec nats-server -c "${CONFIG:?}/nats.conf"
