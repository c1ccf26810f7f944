#!/usr/bin/env bash
# Installs Payfleet on a Debian host under systemd — idempotent: run it again after an upgrade.
#
#   deploy/install.sh [--dry-run] [--prefix /opt/payfleet] [--no-build] [--enable "ledger-writer@0 crm-sync@0 …"]
#
# 1. builds release binaries (swift build -c release) unless --no-build
# 2. creates one system user per process (`payfleet-<process>`) and the operators' group
#    `payfleet-ops` (PAYFLEET_OPERATORS="alice bob" adds those users to it and to every
#    process group, for read access to the state files)
# 3. installs binaries in PREFIX/bin, the operator wrapper /usr/local/bin/payfleet,
#    config in /etc/payfleet (kept if present), credential dirs /etc/payfleet/credentials/<process>
# 4. installs the units from deploy/systemd into /etc/systemd/system, daemon-reload, enables
#    payfleet.target, ingest and the listed worker instances (default: partition 0 of each)
# 5. prints what is still missing (credentials, broker users: deploy/rabbitmq/README.md)
# With --dry-run every step is printed, nothing is changed.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0; PREFIX=/opt/payfleet; BUILD=1
ENABLE="crm-sync@0 ledger-writer@0 receipt-sender@0 settlement-aggregator@0"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --prefix) PREFIX="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --enable) ENABLE="$2"; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
PROCESSES="ingest crm-sync ledger-writer receipt-sender settlement-aggregator"
BINARIES="$PROCESSES payfleet"
run() { if [ $DRY = 1 ]; then echo "+ $*"; else "$@"; fi; }
need_root() { [ $DRY = 1 ] || [ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (or with --dry-run)" >&2; exit 1; }; }
need_root

if [ $BUILD = 1 ]; then
    run swift build -c release $(for b in $BINARIES; do printf -- '--product %s ' "$b"; done)
fi
BIN="$(swift build -c release --show-bin-path 2>/dev/null || echo .build/release)"

# One system user (and group) per process: no process can read or rewrite another's state.
# Group payfleet-ops: the operators; it is a member of every process group, so the CLI reads
# the state files (mode 0640, directories 0750) and only it writes the audit log.
getent group payfleet-ops >/dev/null || run groupadd --system payfleet-ops
for p in $PROCESSES; do
    if ! getent passwd "payfleet-$p" >/dev/null; then
        run useradd --system --user-group --home-dir "/var/lib/payfleet/$p" --no-create-home \
            --shell /usr/sbin/nologin "payfleet-$p"
    fi
done
for u in ${PAYFLEET_OPERATORS:-}; do
    run usermod -a -G "payfleet-ops,$(for p in $PROCESSES; do printf 'payfleet-%s,' "$p"; done | sed 's/,$//')" "$u"
done
run install -d -m 0755 /var/lib/payfleet
run install -d -m 2770 -o root -g payfleet-ops /var/log/payfleet
run install -d -m 0755 "$PREFIX/bin"
for b in $BINARIES; do
    if [ $DRY = 1 ] || [ -x "$BIN/$b" ]; then
        run install -m 0755 "$BIN/$b" "$PREFIX/bin/$b"
    else
        echo "install.sh: $BIN/$b is missing (build first, or drop --no-build)" >&2; exit 1
    fi
done
run install -d -m 0755 /etc/payfleet
if [ ! -e /etc/payfleet/payfleet.yaml ]; then
    run install -m 0644 config/payfleet.production.yaml /etc/payfleet/payfleet.yaml
else
    echo "install.sh: keeping /etc/payfleet/payfleet.yaml (compare with config/payfleet.production.yaml)"
fi
run install -d -m 0700 /etc/payfleet/credentials
for p in $PROCESSES operator; do run install -d -m 0700 "/etc/payfleet/credentials/$p"; done
wrapper='#!/bin/sh
# The operator CLI with the production config and the operator broker user.
export PAYFLEET_CONFIG="${PAYFLEET_CONFIG:-/etc/payfleet/payfleet.yaml}"
export CREDENTIALS_DIRECTORY="${CREDENTIALS_DIRECTORY:-/etc/payfleet/credentials/operator}"
exec '"$PREFIX"'/bin/payfleet "$@"'
if [ $DRY = 1 ]; then echo "+ write /usr/local/bin/payfleet (wrapper for $PREFIX/bin/payfleet)"; else
    printf '%s\n' "$wrapper" > /usr/local/bin/payfleet && chmod 0755 /usr/local/bin/payfleet; fi

for u in deploy/systemd/*; do
    dest="/etc/systemd/system/$(basename "$u")"
    if [ $DRY = 1 ]; then echo "+ install $u $dest (ExecStart under $PREFIX/bin)"; else
        sed "s|/opt/payfleet/bin|$PREFIX/bin|g" "$u" > "$dest.tmp" && mv "$dest.tmp" "$dest"; fi
done
run systemctl daemon-reload
run systemctl enable payfleet.target payfleet-ingest.service
for i in $ENABLE; do run systemctl enable "payfleet-$i.service"; done

missing=()
for p in $PROCESSES operator; do
    [ -s "/etc/payfleet/credentials/$p/broker-url" ] || missing+=("/etc/payfleet/credentials/$p/broker-url")
done
for f in ingest/stripe-webhook-secrets ingest/adyen-hmac-key operator/management-url; do
    [ -s "/etc/payfleet/credentials/$f" ] || missing+=("/etc/payfleet/credentials/$f")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: before 'systemctl start payfleet.target', create (mode 0600, owner root):"
    printf '  %s\n' "${missing[@]}"
    echo "  and the broker users: deploy/rabbitmq/README.md"
else
    echo "install.sh: done — systemctl start payfleet.target"
fi
