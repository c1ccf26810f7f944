#!/usr/bin/env bash
# Installs what Payfleet needs on Debian 12 that a fresh machine may lack: the C libraries the
# Swift targets link (rabbitmq-c, SQLite, libcurl, libsystemd), RabbitMQ itself for the private
# broker, and the small tools the scripts use. Swift 6.3 itself must already be installed.
set -euo pipefail
need=()
# systemd (systemd-analyze) and prometheus (promtool) check deploy/ in the tests; iproute2 (ip netns)
# builds the cluster test's hosts.
for pkg in librabbitmq-dev libsqlite3-dev libcurl4-openssl-dev libsystemd-dev rabbitmq-server sqlite3 curl openssl \
    python3 python3-venv hledger systemd prometheus iproute2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps: installing ${need[*]}" >&2
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# bean-check (beancount from PyPI, ~1 min) validates the ledger export in the tests; it lives in
# a private venv so the system Python stays untouched. PAYFLEET_SKIP_BEANCOUNT=1 skips it.
tools="$(cd "$(dirname "$0")/.." && pwd)/.payfleet/tools"
if [ -z "${PAYFLEET_SKIP_BEANCOUNT:-}" ] && [ ! -x "$tools/bin/bean-check" ] && ! command -v bean-check >/dev/null; then
    echo "install-deps: installing beancount into $tools" >&2
    python3 -m venv "$tools" && "$tools/bin/pip" install -q beancount \
        || echo "install-deps: beancount not installed; the bean-check test will be skipped" >&2
fi
# Debian's chromium renders the settlement HTML report in a test and drives the console test
# (headless, ~50 s to install here); PAYFLEET_SKIP_CHROMIUM=1 skips it and those tests then say
# they were skipped.
if [ -z "${PAYFLEET_SKIP_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
    echo "install-deps: installing chromium" >&2
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null \
        || echo "install-deps: chromium not installed; the HTML render and console tests will be skipped" >&2
fi
command -v swift >/dev/null || { echo "install-deps: Swift 6.3 is required (https://www.swift.org/install/linux/)" >&2; exit 1; }
# The providers' own signing libraries, used by ingest's tests to cross-check signatures
# (tests skip that check with a message when they are missing).
if command -v python3 >/dev/null && ! python3 -c "import stripe, standardwebhooks, Adyen" 2>/dev/null; then
    python3 -m pip install -q stripe standardwebhooks Adyen >/dev/null 2>&1 \
        || echo "install-deps: pip install stripe standardwebhooks Adyen failed; signature cross-checks will be skipped" >&2
fi
# receipt-sender's tests run a real SMTP server on loopback (aiosmtpd).
if command -v python3 >/dev/null && ! python3 -c "import aiosmtpd" 2>/dev/null; then
    python3 -m pip install -q aiosmtpd >/dev/null 2>&1 \
        || { echo "install-deps: pip install aiosmtpd failed (receipt-sender's SMTP tests need it)" >&2; exit 1; }
fi
