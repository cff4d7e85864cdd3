#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and print the path of its interpreter.
#
# The environment lives outside the working tree, keyed by the hash of requirements.txt, so every
# clone on a machine shares it (each running its own code through PYTHONPATH, see below) and it is
# rebuilt only when a pin changes:
#   ${S3PRL_PLUGINS_VENV_ROOT:-$HOME/.cache/s3prl-plugins}/venv-<hash>
# Debian packages the project needs (ffmpeg-less audio via libsndfile, espeak-ng for the mini corpus, libsox)
# are installed with apt-get when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
req="$here/requirements.txt"
hash=$( (cat "$req"; python3 --version) | sha256sum | cut -c1-12)
root=${S3PRL_PLUGINS_VENV_ROOT:-$HOME/.cache/s3prl-plugins}
venv="$root/venv-$hash"

log() { echo "[setup_env] $*" >&2; }
fail() { log "error: $*"; exit 1; }
# any failing step: the command's own message is above; this line says what it means
trap 'log "error: setting up $venv failed (tools/setup_env.sh line $LINENO); a build that did not finish is not marked complete, and the next run builds it again"' ERR

# One set-up at a time per environment: a second caller (another clone's make, a parallel CI job) waits here and
# then reuses what the first built. The kernel releases the lock however its holder ends, and an environment
# whose build was interrupted lacks its .complete marker, so it never looks finished and is rebuilt.
mkdir -p "$root" 2>/dev/null || fail "cannot create $root: set S3PRL_PLUGINS_VENV_ROOT to a writable folder"
[ -w "$root" ] || fail "$root is not writable: set S3PRL_PLUGINS_VENV_ROOT to a writable folder"
if command -v flock >/dev/null 2>&1; then
  exec 9>>"$root/.lock-$hash"
  chmod a+rw "$root/.lock-$hash" 2>/dev/null || true   # a cache folder shared by several users: each may lock it
  if ! flock -n 9; then
    log "waiting for another set-up of $venv to finish (another clone or make target builds it)"
    flock 9
  fi
else
  log "warning: no flock (util-linux): two set-ups at once on this machine could build $venv at the same time"
fi

# libsox-dev: torchaudio.sox_effects (s3prl's SUPERB KS loader) dlopens the unversioned libsox.so, which only
# the -dev package provides (libsox3 alone has libsox.so.3).
apt_pkgs=(libsndfile1 espeak-ng libsox-dev)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "warning: cannot install ${missing[*]} (no apt-get); install them with your system's package manager"
  fi
fi

# Editable installs do not carry our start-up .pth (wheels do, see setup.py): put it in site-packages -- only
# when it differs, and by a rename, so that a python starting in another clone never reads half a file.
install_pth() {
  local site pth=s3prl_plugins-autoload.pth
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cmp -s "$here/$pth" "$site/$pth" && return 0
  cp "$here/$pth" "$site/.$pth.$$"
  mv -f "$site/.$pth.$$" "$site/$pth"
}

if [ ! -f "$venv/.complete" ]; then
  log "creating $venv (first run downloads ~4 GB; later runs reuse it)"
  rm -rf "$venv"   # an earlier build that was interrupted (this process holds the lock: nobody else's)
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q "$(grep -E "^pip==" "$req")" >&2
  # torch first, alone: every later package then sees torch==2.8.0 as already satisfied.
  "$venv/bin/python" -m pip install -q torch==2.8.0 torchaudio==2.8.0 >&2
  "$venv/bin/python" -m pip install -q -r "$req" >&2
  "$venv/bin/python" -m pip install -q --no-deps -e "$here" >&2
  "$venv/bin/python" -m pip check >&2
  install_pth
  touch "$venv/.complete"
fi
# Several clones share this environment, so it must never decide which clone's code runs: the editable
# install made at creation (it points at the clone that created the venv) is never re-pointed. Each clone
# runs its own code by putting itself first on PYTHONPATH -- the Makefile exports PYTHONPATH=$(CURDIR) and
# the recipes' path.sh the repository root -- and PYTHONPATH comes before the editable finder on sys.path.
# (Chosen over a venv per clone: 7 GB and ~4 GB of downloads each; over a non-editable install: it would
# still be one clone's code for all of them.)
install_pth
echo "$venv/bin/python"
