#!/usr/bin/env bash
# AI-OBS developer entry point. Does ALL set-up on a fresh machine (Python 3.11 + Go + apt), then runs the command.
#
#   ./dev.sh demo            set up, then run the main job on embedded defaults (no external servers)
#   ./dev.sh test [ARGS]     set up, then run the test suite (pytest ARGS)
#   ./dev.sh setup           set up only
#   ./dev.sh bench           set up, then run every bench/ script
#   ./dev.sh dagster         set up, then `dagster dev` on the project's definitions (http://127.0.0.1:3000)
#   ./dev.sh retrain [ARGS]  set up, then run the retrain_ranker job once (`dagster job execute`, ARGS e.g. -c run.yaml)
#   ./dev.sh mlflow          set up, then the MLflow UI on the local store (http://127.0.0.1:5000)
#
# A second run with nothing changed reinstalls nothing: the venv is keyed on a hash of requirements.lock +
# pyproject.toml, livekit-server on its pinned version. Caches (uv's wheel cache, Go's module and build caches) live
# in their usual per-user places and are reused across clones and CI runs.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$PWD"

PYTHON="${AIOBS_PYTHON:-python3.11}"
UV_VERSION="0.13.8"
LIVEKIT_MODULE="github.com/livekit/livekit-server"
LIVEKIT_VERSION="v1.13.5"   # newest tag whose go.mod has no replace directives (go install refuses those)
APT_PACKAGES=(libgl1 libglib2.0-0 espeak-ng chromium)   # opencv-python dlopens the first two; espeak-ng voices
                                                         # benchmark speakers; chromium runs the control page's test
LIVEKIT_CLIENT_VERSION="2.23.0"   # the LiveKit JS client the control page loads (npm registry, fetched here only)
LIVEKIT_CLIENT_INTEGRITY="sha512-j9Kg86nJjBjNFUD+ukp2jwMCGa0k+YD5gU//RzAM+ZY3pbG631QCte7fQjwqWMmtBzhDJL9nKYuOLMv/9IbAxg=="

# Telemetry off and no model hubs, for everything started from here (each library has its own switch).
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false YOLO_CONFIG_DIR="$ROOT/.cache/ultralytics"
export MLFLOW_DISABLE_TELEMETRY=true DAGSTER_DISABLE_TELEMETRY=1 BENTOML_DO_NOT_TRACK=true ORT_DISABLE_TELEMETRY=1
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1
export UV_PYTHON_DOWNLOADS=never PIP_DISABLE_PIP_VERSION_CHECK=1
export PATH="$ROOT/.bin:$PATH"

log() { printf '[dev.sh] %s\n' "$*" >&2; }

need() { command -v "$1" >/dev/null 2>&1 || { log "missing $1: $2"; exit 1; }; }

setup_apt() {
  local missing=()
  for lib in libGL.so.1 libglib-2.0.so.0; do
    ldconfig -p 2>/dev/null | grep -q "$lib" || missing+=("$lib")
  done
  command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "system libraries missing (${missing[*]}): apt-get install ${APT_PACKAGES[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
}

setup_uv() {
  UV="$ROOT/.cache/uv-tool/bin/uv"
  if [ -x "$UV" ] && [ "$("$UV" --version 2>/dev/null | awk '{print $2}')" = "$UV_VERSION" ]; then return 0; fi
  need "$PYTHON" "install Python 3.11 (or point AIOBS_PYTHON at one)"
  log "installing uv $UV_VERSION (bootstrap venv)"
  rm -rf "$ROOT/.cache/uv-tool"
  "$PYTHON" -m venv "$ROOT/.cache/uv-tool"
  "$ROOT/.cache/uv-tool/bin/pip" install -q "uv==$UV_VERSION"
}

# The venv unpacked is ~8.7 GB (5.5 GB of it CUDA libs torch's PyPI wheel drags in). Copying it out of uv's cache
# needs that much again on the disk, which a CI machine has not always had (it ran out of space once). So: hardlinks
# when the cache is on the same filesystem (no extra space), a copy when it is not and the disk has room, symlinks
# into the cache otherwise (setup_venv re-syncs if a cache clean left them dangling).
VENV_NEED_KB=$((10 * 1024 * 1024))
choose_link_mode() {
  if [ -n "${UV_LINK_MODE:-}" ]; then log "uv link mode $UV_LINK_MODE (from UV_LINK_MODE)"; return 0; fi
  local cache free
  cache="$("$UV" cache dir 2>/dev/null)"; mkdir -p "$cache"
  free="$(df -Pk .venv | awk 'NR==2 {print $4}')"
  if [ "$(stat -c %d "$cache")" = "$(stat -c %d .venv)" ]; then
    export UV_LINK_MODE=hardlink
  elif [ "$free" -ge "$VENV_NEED_KB" ]; then
    export UV_LINK_MODE=copy
  else
    export UV_LINK_MODE=symlink
    log "only $((free / 1024)) MB free beside .venv and uv's cache ($cache) is on another filesystem:" \
        "linking the venv's files into the cache instead of copying them"
  fi
}

setup_venv() {
  local want have=""
  want="$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
  [ -f .venv/.aiobs-lock ] && have="$(cat .venv/.aiobs-lock)"
  if [ "$want" = "$have" ] && [ -x .venv/bin/aiobs ] && [ -e .venv/lib/python3.11/site-packages/torch/__init__.py ]; then
    return 0
  fi
  log "syncing .venv with requirements.lock (first run downloads ~3 GB of wheels; later runs use uv's cache)"
  [ -x .venv/bin/python ] || "$UV" venv -q --python "$PYTHON" .venv
  choose_link_mode
  # bytecode compiled once here: every `aiobs` start imports torch and friends, and a shell with
  # PYTHONDONTWRITEBYTECODE would otherwise recompile them on every run (seconds each time)
  VIRTUAL_ENV="$ROOT/.venv" "$UV" pip sync -q --compile-bytecode requirements.lock
  VIRTUAL_ENV="$ROOT/.venv" "$UV" pip install -q --no-deps -e .
  echo "$want" > .venv/.aiobs-lock
}

setup_livekit() {
  local exe="$ROOT/.bin/livekit-server"
  if [ -x "$exe" ] && "$exe" --version 2>/dev/null | grep -q "${LIVEKIT_VERSION#v}"; then return 0; fi
  need go "install Go (livekit-server is built from the Go module proxy)"
  log "building livekit-server $LIVEKIT_VERSION with go install (a few minutes the first time; Go caches the build)"
  mkdir -p "$ROOT/.bin"
  GOBIN="$ROOT/.bin" GOFLAGS=-mod=mod go install "$LIVEKIT_MODULE/cmd/server@$LIVEKIT_VERSION"
  mv -f "$ROOT/.bin/server" "$exe"
}

# The control page's LiveKit JS client: livekit-client from the npm registry, at set-up time only (the service serves
# it from bento/control/vendor/, ignored by git, packed into the Bento by bento/bentofile.yaml). The tarball must match
# the pinned integrity; only its browser bundle (dist/livekit-client.umd.js) is kept.
setup_control() {
  local vendor="$ROOT/bento/control/vendor" js="livekit-client.umd.js" dir="$ROOT/.cache/npm"
  local tgz="$dir/livekit-client-$LIVEKIT_CLIENT_VERSION.tgz"
  if [ -f "$vendor/$js" ] && [ "$(cat "$vendor/VERSION" 2>/dev/null)" = "$LIVEKIT_CLIENT_VERSION" ]; then return 0; fi
  need npm "install Node.js and npm (the control page's LiveKit JS client comes from the npm registry)"
  log "fetching livekit-client $LIVEKIT_CLIENT_VERSION from the npm registry (npm pack)"
  mkdir -p "$dir" "$vendor"
  [ -f "$tgz" ] || (cd "$dir" && npm pack --silent "livekit-client@$LIVEKIT_CLIENT_VERSION" >/dev/null)
  local got
  got="$(node -e 'const c = require("crypto"), fs = require("fs");
    process.stdout.write("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$tgz")"
  if [ "$got" != "$LIVEKIT_CLIENT_INTEGRITY" ]; then
    rm -f "$tgz"; log "livekit-client $LIVEKIT_CLIENT_VERSION: integrity mismatch ($got)"; exit 1
  fi
  tar -xzf "$tgz" -C "$dir" "package/dist/$js"
  mv -f "$dir/package/dist/$js" "$vendor/$js" && touch "$vendor/$js"   # npm tarballs date every file 1985
  rm -rf "$dir/package"
  echo "$LIVEKIT_CLIENT_VERSION" > "$vendor/VERSION"
}

setup() {
  setup_apt
  setup_uv
  setup_venv
  setup_livekit
  setup_control
}

cmd="${1:-}"; shift || true
stores() {  # the settings' stores as shell exports (the one place they are resolved: runtime/settings.py)
  .venv/bin/python - <<'PY'
import shlex
from pathlib import Path

from runtime.settings import load_settings

s = load_settings()
s.ensure_dirs()
out = {"DEVSH_DATA_DIR": s.data_dir, "DAGSTER_HOME": s.dagster_home, "DEVSH_MLFLOW": s.mlflow_tracking_uri,
       "DEVSH_ARTIFACTS": Path(s.mlflow_artifacts_dir).resolve().as_uri(), "AIOBS_DATA_DIR": s.data_dir}
print("\n".join(f"export {k}={shlex.quote(str(v))}" for k, v in out.items()))
PY
}

case "$cmd" in
  setup) setup ;;
  demo)
    setup
    exec .venv/bin/python -m runtime.demo "$@" ;;
  test)
    setup
    exec .venv/bin/python -m pytest "$@" ;;
  bench)
    setup
    for b in bench/*.py; do log "$b"; .venv/bin/python "$b"; done ;;
  dagster|retrain)
    setup
    eval "$(stores)"  # Dagster's home, the feature log, MLflow: all where the settings say (AIOBS_DATA_DIR, aiobs.yaml)
    log "data dir $DEVSH_DATA_DIR (DAGSTER_HOME $DAGSTER_HOME, MLflow $DEVSH_MLFLOW)"
    mkdir -p "$DAGSTER_HOME" && cp -n dagster.yaml "$DAGSTER_HOME/dagster.yaml"
    if [ "$cmd" = retrain ]; then
      exec env --default-signal=INT,TERM .venv/bin/dagster job execute -m pipelines.definitions -j retrain_ranker "$@"
    fi
    # a shell that started us in the background ignores SIGINT, and `dagster dev` copies SIGINT's handler onto
    # SIGTERM: both were ignored (~60 s until a kill). Default handlers make INT/TERM a clean, prompt shutdown.
    exec env --default-signal=INT,TERM .venv/bin/dagster dev -m pipelines.definitions -h 127.0.0.1 -p "${PORT:-3000}" "$@" ;;
  mlflow)
    setup
    eval "$(stores)"
    log "MLflow UI on $DEVSH_MLFLOW (artifacts $DEVSH_ARTIFACTS)"
    # one worker: the UI starts in seconds on a small machine (four took ~90 s on 2 cores)
    exec env --default-signal=INT,TERM .venv/bin/mlflow ui --backend-store-uri "$DEVSH_MLFLOW" \
      --workers "${MLFLOW_WORKERS:-1}" --host 127.0.0.1 --port "${PORT:-5000}" "$@" ;;
  *)
    sed -n '2,15p' "$0"; exit 2 ;;
esac
