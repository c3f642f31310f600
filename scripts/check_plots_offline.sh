#!/usr/bin/env bash
# Check that a `dvc plots show` page draws its charts with no network, and screenshot it.
#
# Why: DVC's default page pulls vega from a CDN and is blank offline; a page built with
# dvc_plots/offline_template.html must not. Headless Chromium loads the page with every
# network request sent to a dead proxy, so a pass here means the page is self-contained
# even on a machine that does have internet.
#
# Usage: scripts/check_plots_offline.sh PAGE.html [OUT.png]   (default OUT: PAGE.png)
# Exit 0 when every vegaEmbed call on the page produced a drawn chart (a canvas or svg with
# class "marks"), 1 otherwise, 2 on bad usage. Needs Debian's chromium
# (apt-get install -y chromium) or CHROMIUM=/path/to/binary.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || ! -f $1 ]]; then
    echo "usage: $0 PAGE.html [OUT.png]" >&2
    exit 2
fi
page=$(realpath "$1")
png=${2:-${page%.html}.png}
chromium=${CHROMIUM:-chromium}
command -v "$chromium" >/dev/null || { echo "$chromium not found: apt-get install -y chromium" >&2; exit 2; }

if grep -Eiq '<script[^>]*src=' "$page"; then
    echo "FAIL: $page loads external scripts:" >&2
    grep -Eio '<script[^>]*src="[^"]*"' "$page" >&2
    exit 1
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
run_chromium() {
    "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --proxy-server=http://127.0.0.1:9 --proxy-bypass-list='<-loopback>' \
        --user-data-dir="$profile" --window-size=1200,900 --virtual-time-budget=5000 \
        "$@" "file://$page" 2>/dev/null
}

expected=$(grep -o 'vegaEmbed(' "$page" | wc -l)
drawn=$(run_chromium --dump-dom | grep -Eo '<(canvas|svg)[^>]*class="marks"' | wc -l)
run_chromium --screenshot="$png" >/dev/null
[[ -s $png ]] || { echo "FAIL: no screenshot written to $png" >&2; exit 1; }

echo "$page: $drawn of $expected charts drawn; screenshot $png"
if (( expected == 0 || drawn < expected )); then
    echo "FAIL: not every chart was drawn" >&2
    exit 1
fi
