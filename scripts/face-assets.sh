#!/usr/bin/env bash
# Fetches, verifies and unpacks everything the face pipeline needs, from package
# registries only (PyPI, the npm registry, Debian's archive):
#   onnxruntime/libonnxruntime.so.1.31.1   ONNX Runtime, out of the PyPI wheel
#   venv/                                   Python 3.11 venv with that onnxruntime + numpy,
#                                           for reference checks
#   models/fr_{detect,landmark,feature,liveness}.onnx + LICENSE
#                                           from npm faceplugin-face-recognition-js 0.0.1
#   photos/face_recognition/                face_recognition 1.3.0's tests/test_images + LICENSE
#   photos/johns/<person>/*.jpg + copyright dlib's examples/johns (only with --johns)
#   assets.env                              export lines: LOCKERFLEET_ORT_LIB, _MODELS,
#                                           _PHOTOS, _PYTHON
# Every download is pinned by sha256 (and so is every file taken out of one, through a
# manifest in its stamp); a mismatch is refused and the bad file deleted. The downloads
# are kept in downloads/. Idempotent: a warm run only re-hashes what the stamps list
# (about 0.1 GB) and prints one line per asset.
#
# Usage: scripts/face-assets.sh [--johns] [--print-env]
#   --johns      also fetch the dlib "johns" photos (5 people x 11) from Debian's dlib
#                source package, with a private apt configuration (/etc is not touched)
#   --print-env  print only the export lines of assets.env on stdout (progress goes to
#                stderr), e.g.  eval "$(scripts/face-assets.sh --print-env)"
#
# Destination: ${LOCKERFLEET_ASSETS:-$HOME/.cache/lockerfleet/assets}
# Environment: LOCKERFLEET_BOOTSTRAP_PYTHON  python used for pip and the venv (default
#                python3; must be CPython 3.11 on x86_64 Linux, as the wheel is cp311)
#              LOCKERFLEET_DEB_SRC  deb-src line(s) for --johns, instead of the ones
#                derived from /etc/apt/sources.list{,.d}
set -euo pipefail

readonly PROG="scripts/face-assets.sh"

# ---- pins ------------------------------------------------------------------------
readonly ORT_VERSION=1.31.1
readonly ORT_WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
readonly ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
readonly ORT_MEMBER="onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}"
readonly ORT_LIB="onnxruntime/libonnxruntime.so.${ORT_VERSION}"
readonly ORT_LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3

readonly MODELS_PKG=faceplugin-face-recognition-js
readonly MODELS_VERSION=0.0.1
readonly MODELS_TGZ="${MODELS_PKG}-${MODELS_VERSION}.tgz"
readonly MODELS_TGZ_SHA256=7ea06031d9a3f83753254fcff60506a07b81b46fc84d4ee024cd041f260ec1ba
readonly MODEL_NAMES=(fr_detect.onnx fr_landmark.onnx fr_feature.onnx fr_liveness.onnx)
declare -rA MODEL_SHA256=(
  [fr_detect.onnx]=6c0256ccd3164f844736a401faf936ec2930764a87ae39442180887d0c5c8854
  [fr_landmark.onnx]=f10b0ba1d2a8a099adefede1ebf3733e44fe370715e7303dbeb7f59c02142258
  [fr_feature.onnx]=87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581
  [fr_liveness.onnx]=afa783b7e902fdfcf323a7240cac2a1c580c25314ea4161129dc1b0d100dc32d
)

readonly FR_VERSION=1.3.0
readonly FR_SDIST="face_recognition-${FR_VERSION}.tar.gz"
readonly FR_SDIST_SHA256=5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec
readonly FR_TOPDIR="face_recognition-${FR_VERSION}"

# Debian bookworm's dlib 19.24+dfsg-1. apt-get source also brings the .dsc and a 200 MB
# orig-dlib-models component tarball; only these two are kept.
readonly DLIB_ORIG=dlib_19.24+dfsg.orig.tar.bz2
readonly DLIB_ORIG_SHA256=66b4263822a2ff91a3e769e501c7d7927a13089e178c1427ec19cb0475823cf6
readonly DLIB_ORIG_TOPDIR=dlib-19.24+dfsg
readonly DLIB_DEBIAN=dlib_19.24+dfsg-1.debian.tar.xz
readonly DLIB_DEBIAN_SHA256=a8983fd91cbdc4500c4b2a5db9f50f46794c6d51cf773c368600db93604ef0b7

# ---- options -----------------------------------------------------------------------
want_johns=0
print_env=0
for arg in "$@"; do
  case $arg in
    --johns) want_johns=1 ;;
    --print-env) print_env=1 ;;
    -h | --help)
      sed -n '2,/^set -euo pipefail$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      printf '%s: FAILED: unknown option %q\n  fix: use --johns and/or --print-env (see --help)\n' "$PROG" "$arg" >&2
      exit 2
      ;;
  esac
done

# Progress goes to fd 3: stdout normally, stderr with --print-env.
if ((print_env)); then exec 3>&2; else exec 3>&1; fi

# ---- helpers -----------------------------------------------------------------------
say() { printf '%-24s %-9s %s\n' "$1" "$2" "$3" >&3; }

warn() { printf '%s: warning: %s\n' "$PROG" "$1" >&2; }

# die WHAT FIX [LOG]: say what failed and how to fix it, then exit 1.
die() {
  printf '%s: FAILED: %s\n' "$PROG" "$1" >&2
  if [[ -n ${3:-} && -s ${3:-} ]]; then
    printf '  last lines of its log:\n' >&2
    tail -n 20 "$3" | sed 's/^/    /' >&2
  fi
  printf '  fix: %s\n' "$2" >&2
  exit 1
}

need_cmd() { # need_cmd CMD FIX
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed" "$2"
}

sha256() { # sha256 FILE: print its sha256
  local h _
  read -r h _ < <(sha256sum -- "$1")
  printf '%s\n' "$h"
}

now() { printf '%s\n' "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

# ---- destination, lock, scratch -----------------------------------------------------
if [[ -n ${LOCKERFLEET_ASSETS:-} ]]; then
  DEST=$LOCKERFLEET_ASSETS
elif [[ -n ${HOME:-} ]]; then
  DEST=$HOME/.cache/lockerfleet/assets
else
  die "no destination: neither LOCKERFLEET_ASSETS nor HOME is set" "set LOCKERFLEET_ASSETS=/some/dir"
fi
mkdir -p "$DEST" 2>/dev/null || die "cannot create the destination $DEST" \
  "pick a writable folder with LOCKERFLEET_ASSETS=/some/dir, or fix the permissions of $DEST"
DEST=$(cd "$DEST" && pwd -P)
readonly DEST DL="$DEST/downloads" STAMPS="$DEST/.stamps"
mkdir -p "$DL" "$STAMPS"

need_cmd sha256sum "apt-get install coreutils"
need_cmd tar "apt-get install tar"
PY3=${LOCKERFLEET_BOOTSTRAP_PYTHON:-python3}

# Checked on first use only, so that a warm run does not start Python at all.
py3_checked=0
need_py3() {
  ((py3_checked)) && return 0
  local fix="install CPython 3.11 with pip and venv (Debian: apt-get install python3 python3-pip python3-venv), or point LOCKERFLEET_BOOTSTRAP_PYTHON at one"
  need_cmd "$PY3" "$fix"
  "$PY3" -m pip --version >/dev/null 2>&1 || die "'$PY3 -m pip' does not run" "$fix"
  py3_checked=1
}

# One run at a time per destination.
exec 9>"$DEST/.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  say "lock" "waiting" "another $PROG run holds $DEST/.lock"
  flock 9
fi
# Scratch inside DEST, so that finished files are moved into place on one filesystem.
rm -rf "$DEST"/.work.* # left over by an interrupted run (we hold the lock)
WORK=$(mktemp -d "$DEST/.work.XXXXXX")
readonly WORK
trap 'rm -rf "$WORK"' EXIT

# ---- stamps --------------------------------------------------------------------------
# A stamp is "key <KEY>" followed by sha256sum lines (paths relative to DEST) of the kept
# download(s) and of every file unpacked from them. It is good when the key matches
# (the pins in this script) and every listed file still has its hash; a stale stamp is
# removed at once, so that a redo that fails leaves none behind.
stamp_check() { # stamp_check NAME KEY LABEL -> 0 good, 1 absent, 2 stale
  local st="$STAMPS/$1" first
  [[ -f $st ]] || return 1
  first=$(head -n 1 "$st")
  if [[ $first != "key $2" ]]; then
    warn "$3: stamp $st does not match the pins in this script; redoing it"
    rm -f "$st"
    return 2
  fi
  if ! (cd "$DEST" && tail -n +2 "$st" | sha256sum --check --quiet --strict --status -) 2>/dev/null; then
    warn "$3: some files listed in $st are missing or changed; redoing it"
    rm -f "$st"
    return 2
  fi
  return 0
}

write_stamp() { # write_stamp NAME KEY PATH... (paths relative to DEST)
  local name=$1 key=$2
  shift 2
  {
    printf 'key %s\n' "$key"
    (cd "$DEST" && sha256sum -- "$@")
  } >"$WORK/stamp.$name"
  mv "$WORK/stamp.$name" "$STAMPS/$name"
}

# Replace DST (a folder) by SRC, as near to atomically as two renames get.
replace_dir() { # replace_dir SRC DST
  rm -rf "$2.old"
  if [[ -e $2 ]]; then mv "$2" "$2.old"; fi
  mv "$1" "$2"
  rm -rf "$2.old"
}

fetched_now=0 # set by ensure_download when it had to fetch; read by status()
status() { if ((fetched_now)); then echo fetched; else echo unpacked; fi; }

# ensure_download LABEL FETCH_FN FILE SHA256 [FILE SHA256]...
# Makes sure every FILE is in downloads/ with its pinned sha256. A kept file that no
# longer matches is deleted and fetched again. Otherwise FETCH_FN DIR LOG is called once,
# must leave the files in DIR, and each must match its pin or it is deleted and we fail.
ensure_download() {
  local label=$1 fetch=$2 missing=0 file sha got
  shift 2
  local -a pairs=("$@")
  local i
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    file=${pairs[i]} sha=${pairs[i + 1]}
    if [[ -f $DL/$file ]]; then
      got=$(sha256 "$DL/$file")
      if [[ $got == "$sha" ]]; then continue; fi
      warn "$label: kept download $DL/$file has sha256 $got, pinned $sha (corrupt or truncated); deleted it, fetching it again"
      rm -f "$DL/$file"
    fi
    missing=1
  done
  ((missing)) || return 0
  fetched_now=1

  local dir log
  dir=$(mktemp -d "$WORK/fetch.XXXXXX")
  log=$dir.log
  "$fetch" "$dir" "$log"
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    file=${pairs[i]} sha=${pairs[i + 1]}
    if [[ ! -f $dir/$file ]]; then
      die "$label: the fetch did not produce $file (it produced: $(cd "$dir" && find . -maxdepth 1 -type f -printf '%f ' | head -c 400))" \
        "the registry now serves another file name or version; review it and update the pins at the top of $PROG" "$log"
    fi
    got=$(sha256 "$dir/$file")
    if [[ $got != "$sha" ]]; then
      rm -f "$dir/$file"
      die "$label: $file has sha256 $got but the pin is $sha; refused it and deleted it" \
        "the registry served other bytes than the pinned ones; retry, and if it persists review the new file and, only if it is trustworthy, update the pin in $PROG"
    fi
  done
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    mv "$dir/${pairs[i]}" "$DL/${pairs[i]}"
  done
}

# ---- fetchers (DIR LOG) ---------------------------------------------------------------
pypi_fix() {
  printf 'check that PyPI is reachable from here (pip config list; PIP_INDEX_URL) and that "%s -m pip --version" works; the log above says more' "$PY3"
}

fetch_ort_wheel() {
  need_py3
  "$PY3" -m pip download --no-deps --only-binary :all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 "onnxruntime==$ORT_VERSION" -d "$1" >"$2" 2>&1 ||
    die "pip download of onnxruntime==$ORT_VERSION (manylinux_2_28_x86_64, cp311) from PyPI failed" "$(pypi_fix)" "$2"
}

fetch_fr_sdist() {
  need_py3
  "$PY3" -m pip download --no-deps --no-binary :all: "face_recognition==$FR_VERSION" -d "$1" >"$2" 2>&1 ||
    die "pip download of the face_recognition==$FR_VERSION sdist from PyPI failed" "$(pypi_fix)" "$2"
}

fetch_models_tgz() {
  need_cmd npm "install Node.js and npm (Debian: apt-get install npm)"
  (cd "$1" && npm pack --ignore-scripts "$MODELS_PKG@$MODELS_VERSION") >"$2" 2>&1 ||
    die "npm pack $MODELS_PKG@$MODELS_VERSION from the npm registry failed" \
      "check that the npm registry is reachable (npm config get registry; npm ping)" "$2"
}

# Prints deb-src lines for this machine's Debian release, derived from its apt sources
# (one-line .list files and deb822 .sources files); third-party repositories are left out.
derive_deb_src() {
  local codename
  # shellcheck disable=SC1091 # the machine's own file
  codename=$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}") || codename=""
  [[ -n $codename ]] || return 1
  need_py3
  "$PY3" - "$codename" <<'PY'
import glob, os, re, sys

codename = sys.argv[1]
out = []

def emit(uri, suite, comps, signed_by):
    s = suite.rstrip("/")
    if not (s == codename or s.startswith(codename + "-") or s.startswith(codename + "/")):
        return  # another distribution's or a third party's suite
    if signed_by and "debian-archive" not in signed_by:
        return  # signed by a third party's key
    opt = f"[signed-by={signed_by}] " if signed_by.startswith("/") and "\n" not in signed_by else ""
    line = f"deb-src {opt}{uri} {suite} {' '.join(comps)}".rstrip()
    if line not in out:
        out.append(line)

one_line = re.compile(r"^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$")
lists = [p for p in ["/etc/apt/sources.list"] if os.path.isfile(p)]
lists += sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
for path in lists:
    for raw in open(path, encoding="utf-8", errors="replace"):
        m = one_line.match(raw.split("#", 1)[0].strip())
        if m:
            sb = re.search(r"signed-by=(\S+)", m.group(2) or "")
            emit(m.group(3), m.group(4), m.group(5).split(), sb.group(1) if sb else "")

def stanzas(text):
    cur, last = {}, None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if cur:
                yield cur
            cur, last = {}, None
        elif raw[0] in " \t" and last:
            cur[last] += "\n" + raw.strip()
        else:
            k, _, v = raw.partition(":")
            last = k.strip().lower()
            cur[last] = v.strip()
    if cur:
        yield cur

for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for st in stanzas(open(path, encoding="utf-8", errors="replace").read()):
        if st.get("enabled", "yes").lower() == "no":
            continue
        if not {"deb", "deb-src"} & set(st.get("types", "").split()):
            continue
        for uri in st.get("uris", "").split():
            for suite in st.get("suites", "").split():
                emit(uri, suite, st.get("components", "").split(), st.get("signed-by", ""))

print("\n".join(out))
PY
}

fetch_dlib_source() {
  local dir=$1 log=$2 apt=$1/apt
  need_cmd apt-get "--johns needs Debian's apt-get; run without --johns on other systems"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dir/src"
  if [[ -n ${LOCKERFLEET_DEB_SRC:-} ]]; then
    printf '%s\n' "$LOCKERFLEET_DEB_SRC" >"$apt/sources.list"
  else
    derive_deb_src >"$apt/sources.list" 2>>"$log" || true
  fi
  if ! grep -q '^deb-src ' "$apt/sources.list"; then
    die "could not derive a Debian deb-src line from /etc/apt/sources.list{,.d} (and /etc/os-release's VERSION_CODENAME)" \
      "give one: LOCKERFLEET_DEB_SRC='deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main' $PROG --johns" "$log"
  fi
  local -a opts=(-q -o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
    -o Acquire::http::Timeout=60 -o Acquire::Retries=2)
  {
    echo "== private sources.list:"
    cat "$apt/sources.list"
    echo "== apt-get update"
  } >>"$log"
  # A failing update (e.g. one unreachable suite) is not fatal by itself: the source
  # download below tells whether what we need was indexed.
  apt-get "${opts[@]}" update >>"$log" 2>&1 || echo "(apt-get update exited $?)" >>"$log"
  echo "== apt-get source --download-only dlib" >>"$log"
  (cd "$dir/src" && apt-get "${opts[@]}" source --download-only dlib) >>"$log" 2>&1 ||
    die "apt-get source --download-only dlib failed (private apt config: $(grep -c '^deb-src' "$apt/sources.list") deb-src line(s), see the log)" \
      "check that Debian's archive is reachable (apt-get update), or give the deb-src line yourself with LOCKERFLEET_DEB_SRC='deb-src URI SUITE main'" "$log"
  mv "$dir/src/"dlib_* "$dir/" 2>/dev/null || true
}

# ---- assets -----------------------------------------------------------------------------
ensure_ort_lib() {
  local label="onnxruntime-lib" key="$ORT_WHEEL_SHA256 $ORT_MEMBER $ORT_LIB_SHA256" t0
  t0=$(now) fetched_now=0
  if stamp_check ort-lib "$key" "$label"; then
    say "$label" "ok" "$DEST/$ORT_LIB"
    return 0
  fi
  ensure_download "$label" fetch_ort_wheel "$ORT_WHEEL" "$ORT_WHEEL_SHA256"
  local x=$WORK/ort
  mkdir -p "$x"
  need_py3
  "$PY3" - "$DL/$ORT_WHEEL" "$ORT_MEMBER" "$x/lib" >"$x.log" 2>&1 <<'PY' ||
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    if member not in names:
        libs = [n for n in names if "/libonnxruntime" in n]
        sys.exit(f"{member} is not in {wheel}; its libonnxruntime members: {libs}")
    with z.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    die "$label: could not extract $ORT_MEMBER from $DL/$ORT_WHEEL" \
      "delete $DL/$ORT_WHEEL and run again; if the member name changed, update ORT_MEMBER in $PROG" "$x.log"
  local got
  got=$(sha256 "$x/lib")
  [[ $got == "$ORT_LIB_SHA256" ]] ||
    die "$label: extracted $ORT_MEMBER has sha256 $got, pinned $ORT_LIB_SHA256" \
      "delete $DL/$ORT_WHEEL and run again; if it persists, the pin in $PROG is wrong"
  chmod 0755 "$x/lib"
  mkdir -p "$DEST/onnxruntime"
  mv "$x/lib" "$DEST/$ORT_LIB"
  write_stamp ort-lib "$key" "downloads/$ORT_WHEEL" "$ORT_LIB"
  say "$label" "$(status)" "$DEST/$ORT_LIB ($(since "$t0"))"
}

ensure_venv() {
  local label="python-venv" key="$ORT_WHEEL_SHA256 onnxruntime+numpy" py="$DEST/venv/bin/python" t0 versions pyv ortv npv
  t0=$(now) fetched_now=0
  local probe='import importlib.metadata as m, sys; print(sys.version.split()[0], m.version("onnxruntime"), m.version("numpy"))'
  if stamp_check venv "$key" "$label"; then
    if versions=$("$py" -c "$probe" 2>/dev/null) && [[ $versions == *" $ORT_VERSION "* ]]; then
      read -r pyv ortv npv <<<"$versions"
      say "$label" "ok" "$py (python $pyv, onnxruntime $ortv, numpy $npv)"
      return 0
    fi
    warn "$label: $py does not run or lacks onnxruntime $ORT_VERSION and numpy; recreating the venv"
  fi
  need_py3
  [[ $(uname -sm) == "Linux x86_64" ]] ||
    die "$label: the onnxruntime wheel is for x86_64 Linux, this is $(uname -sm)" "run this on an x86_64 Linux machine"
  "$PY3" -c 'import sys; sys.exit(sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11))' ||
    die "$label: $PY3 is $("$PY3" -c 'import sys; print(sys.implementation.name, sys.version.split()[0])' 2>/dev/null || echo '?'), the wheel needs CPython 3.11" \
      "point LOCKERFLEET_BOOTSTRAP_PYTHON at a CPython 3.11 (e.g. LOCKERFLEET_BOOTSTRAP_PYTHON=python3.11)"
  ensure_download "$label" fetch_ort_wheel "$ORT_WHEEL" "$ORT_WHEEL_SHA256"
  local log=$WORK/venv.log
  rm -rf "$DEST/venv"
  "$PY3" -m venv "$DEST/venv" >"$log" 2>&1 ||
    die "$label: $PY3 -m venv $DEST/venv failed" "install the venv module (Debian: apt-get install python3-venv) or use another LOCKERFLEET_BOOTSTRAP_PYTHON" "$log"
  # The wheel comes from downloads/ (pinned); its dependencies (numpy, protobuf,
  # flatbuffers, packaging) come from PyPI.
  if ! "$py" -m pip install --disable-pip-version-check "$DL/$ORT_WHEEL" numpy >>"$log" 2>&1; then
    rm -rf "$DEST/venv"
    die "$label: pip install of $ORT_WHEEL and numpy into $DEST/venv failed" "$(pypi_fix)" "$log"
  fi
  if ! "$py" -c 'import onnxruntime, numpy; assert "CPUExecutionProvider" in onnxruntime.get_available_providers()' >>"$log" 2>&1; then
    rm -rf "$DEST/venv"
    die "$label: the new venv cannot import onnxruntime and numpy" "read the log above; delete $DEST/venv and run again" "$log"
  fi
  "$py" -m pip freeze --disable-pip-version-check >"$DEST/venv/requirements.lock" 2>/dev/null || true
  write_stamp venv "$key" "downloads/$ORT_WHEEL" "venv/pyvenv.cfg"
  versions=$("$py" -c "$probe")
  read -r pyv ortv npv <<<"$versions"
  say "$label" "created" "$py (python $pyv, onnxruntime $ortv, numpy $npv; $(since "$t0"))"
}

ensure_models() {
  local label="models" key="$MODELS_TGZ_SHA256" name t0 got
  for name in "${MODEL_NAMES[@]}"; do key+=" $name=${MODEL_SHA256[$name]}"; done
  t0=$(now) fetched_now=0
  if stamp_check models "$key" "$label"; then
    say "$label" "ok" "$DEST/models (${MODEL_NAMES[*]} LICENSE)"
    return 0
  fi
  ensure_download "$label" fetch_models_tgz "$MODELS_TGZ" "$MODELS_TGZ_SHA256"
  local x=$WORK/models-x
  local -a members=(package/LICENSE)
  for name in "${MODEL_NAMES[@]}"; do members+=("package/model/$name"); done
  mkdir -p "$x/models"
  tar -xzf "$DL/$MODELS_TGZ" -C "$x" "${members[@]}" 2>"$x.log" ||
    die "$label: could not extract ${members[*]} from $DL/$MODELS_TGZ" \
      "delete $DL/$MODELS_TGZ and run again; if a member is really missing, update MODEL_NAMES in $PROG" "$x.log"
  for name in "${MODEL_NAMES[@]}"; do
    got=$(sha256 "$x/package/model/$name")
    [[ $got == "${MODEL_SHA256[$name]}" ]] ||
      die "$label: $name in $MODELS_TGZ has sha256 $got, pinned ${MODEL_SHA256[$name]}" \
        "delete $DL/$MODELS_TGZ and run again; if it persists, review the model and update MODEL_SHA256 in $PROG"
    mv "$x/package/model/$name" "$x/models/$name"
  done
  mv "$x/package/LICENSE" "$x/models/LICENSE"
  replace_dir "$x/models" "$DEST/models"
  write_stamp models "$key" "downloads/$MODELS_TGZ" "${MODEL_NAMES[@]/#/models/}" models/LICENSE
  say "$label" "$(status)" "$DEST/models (${MODEL_NAMES[*]} LICENSE; $(since "$t0"))"
}

# Prints the files of DIR (relative to DEST), sorted, one per line.
files_under() { (cd "$DEST" && find "$1" -type f | LC_ALL=C sort); }

ensure_photos() {
  local label="photos/face_recognition" key="$FR_SDIST_SHA256" t0 n
  t0=$(now) fetched_now=0
  if stamp_check photos "$key" "$label"; then
    n=$(find "$DEST/photos/face_recognition" -type f ! -name LICENSE | wc -l)
    say "$label" "ok" "$DEST/photos/face_recognition ($n images + LICENSE)"
    return 0
  fi
  ensure_download "$label" fetch_fr_sdist "$FR_SDIST" "$FR_SDIST_SHA256"
  local x=$WORK/photos-x
  mkdir -p "$x/out"
  tar -xzf "$DL/$FR_SDIST" -C "$x" "$FR_TOPDIR/tests/test_images" "$FR_TOPDIR/LICENSE" 2>"$x.log" ||
    die "$label: could not extract $FR_TOPDIR/tests/test_images and LICENSE from $DL/$FR_SDIST" \
      "delete $DL/$FR_SDIST and run again" "$x.log"
  find "$x/$FR_TOPDIR/tests/test_images" -type f ! -name '.*' -exec mv -t "$x/out" {} +
  mv "$x/$FR_TOPDIR/LICENSE" "$x/out/LICENSE"
  n=$(find "$x/out" -type f ! -name LICENSE | wc -l)
  ((n > 0)) || die "$label: $FR_SDIST has no tests/test_images" "the sdist changed; review it and update the pins in $PROG"
  mkdir -p "$DEST/photos"
  replace_dir "$x/out" "$DEST/photos/face_recognition"
  local -a files
  mapfile -t files < <(files_under photos/face_recognition)
  write_stamp photos "$key" "downloads/$FR_SDIST" "${files[@]}"
  say "$label" "$(status)" "$DEST/photos/face_recognition ($n images + LICENSE; $(since "$t0"))"
}

ensure_johns() {
  local label="photos/johns" key="$DLIB_ORIG_SHA256 $DLIB_DEBIAN_SHA256" t0 people n
  if ((!want_johns)); then
    if [[ -f $STAMPS/johns && -d $DEST/photos/johns ]]; then
      say "$label" "skipped" "$DEST/photos/johns is there from an earlier --johns run (not re-checked; pass --johns)"
    else
      say "$label" "skipped" "pass --johns to fetch dlib's photos of 5 Johns from Debian's dlib source package"
    fi
    return 0
  fi
  t0=$(now) fetched_now=0
  if stamp_check johns "$key" "$label"; then
    people=$(find "$DEST/photos/johns" -mindepth 1 -maxdepth 1 -type d | wc -l)
    n=$(find "$DEST/photos/johns" -mindepth 2 -type f | wc -l)
    say "$label" "ok" "$DEST/photos/johns ($people people, $n photos + copyright)"
    return 0
  fi
  need_cmd bzip2 "apt-get install bzip2"
  need_cmd xz "apt-get install xz-utils"
  ensure_download "$label" fetch_dlib_source "$DLIB_ORIG" "$DLIB_ORIG_SHA256" "$DLIB_DEBIAN" "$DLIB_DEBIAN_SHA256"
  local x=$WORK/johns-x
  mkdir -p "$x"
  tar -xjf "$DL/$DLIB_ORIG" -C "$x" "$DLIB_ORIG_TOPDIR/examples/johns" 2>"$x.log" ||
    die "$label: could not extract $DLIB_ORIG_TOPDIR/examples/johns from $DL/$DLIB_ORIG" "delete $DL/$DLIB_ORIG and run again" "$x.log"
  tar -xJf "$DL/$DLIB_DEBIAN" -C "$x" debian/copyright 2>"$x.log" ||
    die "$label: could not extract debian/copyright from $DL/$DLIB_DEBIAN" "delete $DL/$DLIB_DEBIAN and run again" "$x.log"
  mv "$x/$DLIB_ORIG_TOPDIR/examples/johns" "$x/johns"
  mv "$x/debian/copyright" "$x/johns/copyright"
  mkdir -p "$DEST/photos"
  replace_dir "$x/johns" "$DEST/photos/johns"
  local -a files
  mapfile -t files < <(files_under photos/johns)
  write_stamp johns "$key" "downloads/$DLIB_ORIG" "downloads/$DLIB_DEBIAN" "${files[@]}"
  people=$(find "$DEST/photos/johns" -mindepth 1 -maxdepth 1 -type d | wc -l)
  n=$(find "$DEST/photos/johns" -mindepth 2 -type f | wc -l)
  say "$label" "$(status)" "$DEST/photos/johns ($people people, $n photos + copyright; $(since "$t0"))"
}

write_env() {
  local tmp=$WORK/assets.env
  {
    printf 'export LOCKERFLEET_ORT_LIB=%q\n' "$DEST/$ORT_LIB"
    printf 'export LOCKERFLEET_MODELS=%q\n' "$DEST/models"
    printf 'export LOCKERFLEET_PHOTOS=%q\n' "$DEST/photos"
    printf 'export LOCKERFLEET_PYTHON=%q\n' "$DEST/venv/bin/python"
  } >"$tmp"
  if cmp -s "$tmp" "$DEST/assets.env"; then
    say "assets.env" "ok" "$DEST/assets.env"
  else
    mv "$tmp" "$DEST/assets.env"
    say "assets.env" "written" "$DEST/assets.env"
  fi
}

# ---- main ---------------------------------------------------------------------------------
T0=$(now)
ensure_ort_lib
ensure_venv
ensure_models
ensure_photos
write_env
ensure_johns
say "done" "" "$DEST in $(since "$T0")"
if ((print_env)); then cat "$DEST/assets.env"; fi
