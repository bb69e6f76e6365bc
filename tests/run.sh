#!/usr/bin/env bash
# Set up and run the whole test suite (the README's test command; .ci/run calls it).
# Installs what the tests need: Debian packages when run as root (CI), a virtualenv with
# the project and its test dependencies in .venv.  Ends with "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/.."

need=()
for pair in mosquitto:mosquitto mosquitto_sub:mosquitto-clients telnet:telnet curl:curl openssl:openssl chromium:chromium socat:socat ssh:openssh-client \
            systemd-analyze:systemd systemd-socket-activate:systemd promtool:prometheus; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  readarray -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  if [ "$(id -u)" = 0 ]; then
    echo "Installing Debian packages: ${need[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/tmp/cmegw-apt.log 2>&1 \
      || echo "apt-get failed (see /tmp/cmegw-apt.log); the tests that need ${need[*]} will be skipped"
  else
    echo "Not root: tests that need ${need[*]} will be skipped (install them with apt-get)"
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "python3 -m venv failed (Debian: apt-get install python3-venv)"; exit 1; }
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1
.venv/bin/python -m pip install -q ".[test]" || { echo "pip install failed"; exit 1; }
.venv/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" 2>/dev/null

out=$(mktemp)
# The tests import the code from this checkout (trial runs from here).
PYTHONPATH=. timeout 900 .venv/bin/trial --temp-directory=_trial_temp tests 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
summary=$(grep -E '^(PASSED|FAILED) \(' "$out" | tail -n 1)
rm -f "$out"
count() { echo "$summary" | grep -oE "$1=[0-9]+" | cut -d= -f2 | head -n 1; }
passed=$(count successes); failures=$(count failures); errors=$(count errors)
skipped=$(count skips); unexpected=$(count unexpectedSuccesses); expected=$(count expectedFailures)
passed=${passed:-0}; failed=$(( ${failures:-0} + ${errors:-0} + ${unexpected:-0} ))
if [ -z "$summary" ]; then
  echo "trial printed no totals (exit $status)"
  echo "0 passed, 1 failed"
  exit 1
fi
line="$passed passed, $failed failed"
[ -n "$skipped$expected" ] && line="$line, $(( ${skipped:-0} + ${expected:-0} )) skipped"
echo "$line"
exit "$status"
