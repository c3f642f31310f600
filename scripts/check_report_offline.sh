#!/usr/bin/env bash
# Check that the error report (qvad/analysis/error_report.py) works with no network: the page
# renders, and every <audio> element on it loads and decodes. Screenshot it.
#
# Like scripts/check_plots_offline.sh: headless Chromium loads the page with every network
# request sent to a dead proxy, so a pass means the page is self-contained even on a machine
# that does have internet.
#
# How audio loading is verified: a copy of the page (in a temp folder, with a <base> pointing
# at the report's folder so relative references still resolve) gets one inline checker script
# before </body>; the page's Content-Security-Policy, if any, is widened by exactly
# script-src 'unsafe-inline' so that script may run. The script forces every <audio> to load
# (preload=auto, load()), waits for "canplaythrough" (or "error"), then checks that the
# decoded duration is finite, > 0 and, where the element has data-duration-s, within 50 ms of
# it. It writes one line per element, plus any resource the page fetched from outside data:
# and file: URLs, into the DOM, which --dump-dom prints. The screenshot is taken of the
# unmodified page.
#
# Usage: scripts/check_report_offline.sh REPORT.html [OUT.png]   (default OUT: REPORT.png)
# Prints "N of N audio elements loaded". Exit 0 when every audio element loaded, the page has
# at least one, nothing external was referenced or fetched, and a screenshot was written; 1
# otherwise; 2 on bad usage. Needs Debian's chromium (apt-get install -y chromium) or
# CHROMIUM=/path/to/binary. AUDIO_CHECK_BUDGET_MS (default 15000) is the virtual time allowed.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || ! -f $1 ]]; then
    echo "usage: $0 REPORT.html [OUT.png]" >&2
    exit 2
fi
page=$(realpath "$1")
png=${2:-${page%.html}.png}
chromium=${CHROMIUM:-chromium}
budget=${AUDIO_CHECK_BUDGET_MS:-15000}
command -v "$chromium" >/dev/null || { echo "$chromium not found: apt-get install -y chromium" >&2; exit 2; }

# Static check: nothing that a browser would fetch from a host (http:, https:, or //host).
if grep -Eiq '<script[^>]*src=|(src|href|poster|srcset|action|data)[[:space:]]*=[[:space:]]*["'"'"']?[[:space:]]*(https?:|//)|url\([[:space:]]*["'"'"']?(https?:|//)|@import' "$page"; then
    echo "FAIL: $page references external resources:" >&2
    grep -Eio '<script[^>]*src=[^>]*|(src|href|poster|srcset|action|data)[[:space:]]*=[[:space:]]*["'"'"']?[[:space:]]*(https?:|//)[^"'"'"' >]*|url\([^)]*\)|@import[^;]*' "$page" | head -5 >&2
    exit 1
fi
expected=$(grep -o '<audio[[:space:]>]' "$page" | wc -l)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
probe="$work/probe.html"
checker='<script>
(function () {
  var audios = Array.prototype.slice.call(document.querySelectorAll("audio"));
  var out = document.createElement("pre");
  out.id = "qvad-audio-check";
  document.body.appendChild(out);
  var state = audios.map(function () { return "pending"; });
  function show() {
    var lines = state.map(function (s, i) { return "AUDIO " + i + " " + s; });
    performance.getEntriesByType("resource").forEach(function (e) {
      if (!/^(data|file|blob):/.test(e.name)) { lines.push("EXTERNAL " + e.name); }
    });
    out.textContent = ["", "QVAD-AUDIO-CHECK"].concat(lines).join(String.fromCharCode(10));
  }
  audios.forEach(function (a, i) {
    function ready() {
      var d = a.duration, want = parseFloat(a.getAttribute("data-duration-s"));
      if (!(isFinite(d) && d > 0)) { state[i] = "bad-duration:" + d; }
      else if (isFinite(want) && Math.abs(d - want) > 0.05) { state[i] = "wrong-duration:" + d + "!=" + want; }
      else { state[i] = "loaded:" + d.toFixed(3) + "s"; }
      show();
    }
    a.addEventListener("canplaythrough", ready);
    a.addEventListener("error", function () {
      state[i] = "error:" + (a.error ? a.error.code + ":" + a.error.message : "?"); show();
    });
    a.preload = "auto";
    a.load();
  });
  show();
})();
</script>'
dir=$(dirname "$page")
# The copy: <base> after <head>, widened CSP, checker before </body>.
BASE="<base href=\"file://$dir/\">" CHECKER="$checker" awk '
    { line = $0 }
    !based && match(line, /<head[^>]*>/) {
        line = substr(line, 1, RSTART + RLENGTH - 1) ENVIRON["BASE"] substr(line, RSTART + RLENGTH); based = 1
    }
    { gsub(/default-src '\''none'\'';/, "default-src '\''none'\''; script-src '\''unsafe-inline'\'';", line) }
    !checked && (i = index(line, "</body>")) {
        line = substr(line, 1, i - 1) ENVIRON["CHECKER"] substr(line, i); checked = 1
    }
    { print line }
    END { if (!checked) exit 3 }' "$page" > "$probe" || { echo "FAIL: $page has no </body>" >&2; exit 1; }

run_chromium() {
    local url=$1; shift
    "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --proxy-server=http://127.0.0.1:9 --proxy-bypass-list='<-loopback>' \
        --autoplay-policy=no-user-gesture-required --mute-audio \
        --user-data-dir="$work/profile" --window-size=1200,1600 --virtual-time-budget="$budget" \
        "$@" "$url" 2>/dev/null
}

dom=$(run_chromium "file://$probe" --dump-dom || true)
lines=$(grep -E '^(AUDIO|EXTERNAL) ' <<<"$dom" || true)
loaded=$(grep -Ec '^AUDIO [0-9]+ loaded:' <<<"$lines" || true)
seen=$(grep -Ec '^AUDIO [0-9]+ ' <<<"$lines" || true)
external=$(grep -Ec '^EXTERNAL ' <<<"$lines" || true)
run_chromium "file://$page" --screenshot="$png" >/dev/null || true

status=0
[[ -s $png ]] || { echo "FAIL: no screenshot written to $png" >&2; status=1; }
echo "$page: $loaded of $expected audio elements loaded; screenshot $png"
if (( seen != expected )); then
    echo "FAIL: the checker saw $seen audio elements, the page source has $expected" >&2
    status=1
fi
if (( expected == 0 || loaded < expected )); then
    echo "FAIL: not every audio element loaded:" >&2
    grep -Ev '^AUDIO [0-9]+ loaded:' <<<"$lines" | grep '^AUDIO' | head -10 >&2 || true
    status=1
fi
if (( external > 0 )); then
    echo "FAIL: the page fetched $external external resource(s):" >&2
    grep '^EXTERNAL ' <<<"$lines" | head -5 >&2
    status=1
fi
exit $status
