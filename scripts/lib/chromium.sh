# shellcheck shell=bash
# Chromium and chromedriver for the dashboard's browser test (crates/agora-node/tests/it/dashboard.rs), sourced by
# scripts/test. Like the nats-server, what the tests need is installed by the test command itself, so a fresh Debian
# machine runs the whole suite with one command.
#
#   ensure_chromium
#
# Nothing happens when a browser and its driver are already there: on PATH (`chromium` or `chromium-browser`, and
# `chromedriver`) or named by CHROMIUM_BIN and CHROMEDRIVER_BIN, which the test reads first. Otherwise Debian's
# `chromium` and `chromium-driver` are installed with apt-get when running as root; anyone else is told the exact
# command to run, and the test command stops (status 1) rather than fail the browser test half-way.

chromium_present() {
  local browser=${CHROMIUM_BIN:-} driver=${CHROMEDRIVER_BIN:-}
  [ -n "$browser" ] || browser=$(command -v chromium || command -v chromium-browser || true)
  [ -n "$driver" ] || driver=$(command -v chromedriver || true)
  [ -n "$browser" ] && [ -x "$browser" ] && [ -n "$driver" ] && [ -x "$driver" ]
}

ensure_chromium() {
  if chromium_present; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver (apt) for the dashboard's browser test" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    if ! chromium_present; then
      echo "error: chromium or chromedriver still missing after apt-get install chromium chromium-driver" >&2
      return 1
    fi
    return 0
  fi
  echo "error: the dashboard's browser test needs chromium and chromedriver; install them with:" >&2
  echo "  sudo apt-get install -y chromium chromium-driver" >&2
  echo "(or point CHROMIUM_BIN and CHROMEDRIVER_BIN at existing binaries)" >&2
  return 1
}
