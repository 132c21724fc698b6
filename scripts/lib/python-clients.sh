# shellcheck shell=bash
# The Python clients the tests check agora's protocols with (sourced, not run): Mozilla's http_ece (RFC 8291 Web Push
# decryption), PyJWT (VAPID and client tokens) and cryptography, pinned, installed project-locally into
# ROOT/.tools/py with pip. The tests find them through AGORA_TEST_PYTHONPATH (exported here).
#
#   ensure_python_clients ROOT

PYTHON_CLIENTS=("http-ece==1.2.1" "PyJWT==2.10.1" "cryptography==44.0.0")

ensure_python_clients() {
  local dir="$1/.tools/py" stamp
  stamp="$(printf '%s\n' "${PYTHON_CLIENTS[@]}")"
  if [ "$(cat "$dir/.pinned" 2>/dev/null)" != "$stamp" ] ||
    ! PYTHONPATH="$dir" python3 -c 'import http_ece, jwt, cryptography' 2>/dev/null; then
    echo "installing the Python test clients (${PYTHON_CLIENTS[*]}) into .tools/py (pip, project-local)" >&2
    rm -rf "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --target "$dir" \
      "${PYTHON_CLIENTS[@]}"
    printf '%s\n' "$stamp" >"$dir/.pinned"
  fi
  if ! PYTHONPATH="$dir" python3 -c 'import http_ece, jwt, cryptography'; then
    echo "error: the Python test clients in $dir cannot be imported" >&2
    return 1
  fi
  export AGORA_TEST_PYTHONPATH="$dir"
}
