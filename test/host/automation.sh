#!/usr/bin/env bash
# Automation of a VM through the host API with nothing but curl (docs/host-api.yaml): start a VM,
# wait for a line of its serial output in /v1/events, suspend it, resume it, stop it.
#
#   automation.sh SOCKET DISK PASSPHRASE_FILE
#
# SOCKET: the host service's socket ($XDG_RUNTIME_DIR/medv/host.sock; `medv host` runs); DISK: a
# disk image the VM boots; PASSPHRASE_FILE: the passphrase that encrypts the saved state, sent as
# its bytes for a one-time key handle (POST /v1/keys) before each request that needs it.
# Prints one line per step; exits non-zero at the first step that fails.
set -euo pipefail
SOCK=$1 DISK=$2 PASSFILE=$3 NAME=auto
api() { curl -sS --fail-with-body --unix-socket "$SOCK" -H 'content-type: application/json' "$@"; }
field() { sed -n "s/.*\"$1\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" | head -n1; }
handle() { curl -sS --fail-with-body --unix-socket "$SOCK" -H 'content-type: application/octet-stream' --data-binary "@$PASSFILE" http://medv/v1/keys | field handle; }

# Where the events are now: the stream below starts after this cursor, so it replays what comes next.
SINCE=$(api http://medv/v1/host | field cursor)
STATE=$(api -X POST http://medv/v1/vms -d "{\"source\":\"$DISK\",\"name\":\"$NAME\",\"memoryMiB\":32,\"key\":{\"handle\":\"$(handle)\"}}" | field state)
echo "started: $STATE"
[ "$STATE" = running ]

exec 3< <(exec curl -sSN --unix-socket "$SOCK" "http://medv/v1/events?vm=$NAME&since=$SINCE")
EVENTS=$!
LINE=
while IFS= read -r -t 60 event <&3; do
  case "$event" in *'"type":"serial"'*'MEDV-GUEST ready'*) LINE=$(printf '%s\n' "$event" | field line); break ;; esac
done
kill "$EVENTS" 2>/dev/null || true
exec 3<&-
echo "serial: $LINE"
[ -n "$LINE" ]

STATE=$(api -X POST "http://medv/v1/vms/$NAME/suspend" | field state)
echo "suspended: $STATE"
[ "$STATE" = suspended ]

RESUMED=$(api -X POST "http://medv/v1/vms/$NAME/start" -d "{\"key\":{\"handle\":\"$(handle)\"}}" | field resumed)
echo "resumed: $RESUMED"
[ "$RESUMED" = true ]

REASON=$(api -X POST "http://medv/v1/vms/$NAME/stop" -d '{"timeoutS":30}' | field exitReason)
echo "stopped: $REASON"
[ "$REASON" = poweroff ]
