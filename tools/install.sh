#!/usr/bin/env bash
# Idempotent set-up of repvit-mm: .venv, torch, mmcv 2.1.0, the package with its [deploy,plots,tests]
# extras, every version pinned by requirements/constraints.txt (the tested stack). docs/install.md says more.
#
#   bash tools/install.sh                            # mmcv without compiled ops (no compiler, minutes)
#   REPVIT_MM_COMPILED_OPS=1 bash tools/install.sh   # mmcv with its compiled CPU ops (~13 min on 2 cores)
#   REPVIT_MM_COMPILED_OPS=1 FORCE_CUDA=1 bash tools/install.sh   # ... and its CUDA ops (needs nvcc)
#
# By default mmcv is built with MMCV_WITH_OPS=0 and repvit_mm/ops/mmcv_ext.py as its mmcv/_ext.py: the ops
# our configs call (RoIAlign, NMS) run on torchvision's kernels (repvit_mm/ops). An mmcv 2.1.0 with compiled
# ops that is already installed in the venv is kept as it is.
#
# Environment:
#   VENV                     virtual environment to create/use (default: .venv in the repository)
#   PYTHON                   interpreter for a new venv (default: python3.11, else python3)
#   REPVIT_MM_CACHE          where built mmcv wheels are kept (default: ~/.cache/repvit-mm)
#   REPVIT_MM_COMPILED_OPS=1 compile mmcv's C++ ops (cached wheel; the cache key records the flavour)
#   FORCE_CUDA=1             with REPVIT_MM_COMPILED_OPS=1: compile the CUDA ops too (needs nvcc)
#   MAX_JOBS                 parallel compile jobs (default: number of cores)
set -euo pipefail
# The whole script is one { ... } block: bash parses it completely before running, so editing this file
# while an install runs cannot derail that install.
{

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
CACHE="${REPVIT_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/repvit-mm}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
pinned() { sed -n "s/^$1==//p" "$CONSTRAINTS"; }   # the tested version of a package
TORCH_VERSION="$(pinned torch)"
TORCHVISION_VERSION="$(pinned torchvision)"
MMCV_VERSION="$(pinned mmcv)"
[[ -n "$TORCH_VERSION" && -n "$TORCHVISION_VERSION" && -n "$MMCV_VERSION" ]] \
    || { echo "[install] ERROR: $CONSTRAINTS must pin torch, torchvision and mmcv" >&2; exit 1; }
SETUPTOOLS_SPEC='setuptools>=77.0.3,<81'   # mmcv's setup.py imports pkg_resources (removed in 81)
STAMP="$VENV/.repvit-mm-installed"
COMPILED_OPS="${REPVIT_MM_COMPILED_OPS:-0}"
[[ "$COMPILED_OPS" == 0 || "$COMPILED_OPS" == 1 ]] \
    || { echo "[install] ERROR: REPVIT_MM_COMPILED_OPS must be 0 or 1, got '$COMPILED_OPS'" >&2; exit 1; }
[[ "${FORCE_CUDA:-0}" == 1 && "$COMPILED_OPS" == 0 ]] \
    && { echo "[install] ERROR: FORCE_CUDA=1 compiles mmcv's CUDA ops: set REPVIT_MM_COMPILED_OPS=1 too" >&2; exit 1; }
MMCV_EXT="$ROOT/repvit_mm/ops/mmcv_ext.py"   # mmcv/_ext.py of an mmcv without compiled ops

step() { printf '\n==> [install] %s (at %ds)\n' "$*" "$SECONDS"; }   # seconds since the start
die() { printf '\n[install] ERROR: %s\n' "$*" >&2; exit 1; }

# Everything that decides what gets installed; a changed one re-runs the pip steps.
install_fingerprint() {
    cat "$ROOT/pyproject.toml" "$ROOT/tools/install.sh" "$CONSTRAINTS" "$MMCV_EXT"
    echo "FORCE_CUDA=${FORCE_CUDA:-0} REPVIT_MM_COMPILED_OPS=$COMPILED_OPS"
}

# ---------------------------------------------------------------- 1. venv
pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
    command -v python3.11 >/dev/null 2>&1 && { echo python3.11; return; }
    echo python3
}

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    step "virtual environment $VENV exists"
else
    step "creating virtual environment $VENV"
    rm -rf "$VENV"
    "$(pick_python)" -m venv "$VENV" || die "could not create $VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

fingerprint="$(install_fingerprint | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$fingerprint" ]] \
    && "$PY" -c 'import repvit_mm, mmcv.ops' >/dev/null 2>&1; then
    step "already installed and up to date (delete $STAMP to force a reinstall)"
    exit 0
fi
rm -f "$STAMP"   # from here until the end the install counts as unfinished

# ---------------------------------------------------------------- 2. build tools + torch
step "build tools ($SETUPTOOLS_SPEC, wheel, ninja)"
"${PIP[@]}" install -q "$SETUPTOOLS_SPEC" wheel ninja || die "pip could not install the build tools"

step "torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
    || die "pip could not install torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION"

# ---------------------------------------------------------------- 3. mmcv (without or with compiled ops, cached)
# mmcv_state: "compiled" (mmcv._ext is a compiled extension), "served" (it is our mmcv_ext.py, this version),
# or "none"; mmcv.ops must import and mmcv must be $MMCV_VERSION.
mmcv_state() {
    "$PY" - "$MMCV_VERSION" "$MMCV_EXT" <<'PYEOF' 2>/dev/null || echo none
import importlib.machinery, pathlib, sys
import mmcv, mmcv.ops, mmcv._ext  # noqa: E401
assert mmcv.__version__ == sys.argv[1]
path = pathlib.Path(mmcv._ext.__file__)
if path.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
    print('compiled')
else:
    print('served' if path.read_bytes() == pathlib.Path(sys.argv[2]).read_bytes() else 'none')
PYEOF
}

py_tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
if [[ "$COMPILED_OPS" == 1 ]]; then
    flavour=cpu
    [[ "${FORCE_CUDA:-0}" == 1 ]] && flavour="cuda$("$PY" -c 'import torch; print(torch.version.cuda)')"
    WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$py_tag-$flavour"
else   # pure Python: the wheel depends only on mmcv's version and our _ext.py
    flavour="torchvision-ops-$(sha256sum "$MMCV_EXT" | cut -c1-12)"
    WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$flavour"
fi
state="$(mmcv_state)"

if [[ "$COMPILED_OPS" == 0 && "$state" == compiled ]]; then
    step "mmcv $MMCV_VERSION with compiled ops already installed: used as it is"
elif [[ "$COMPILED_OPS" == 0 && "$state" == served ]]; then
    step "mmcv $MMCV_VERSION without compiled ops (RoIAlign, NMS from torchvision) already installed"
elif [[ "$COMPILED_OPS" == 1 && "$state" == compiled && -f "$WHEEL_DIR/.complete" ]]; then
    step "mmcv $MMCV_VERSION with compiled ops ($flavour) already installed"
else
    if [[ ! -f "$WHEEL_DIR/.complete" ]]; then
        build_dir="$(mktemp -d "${TMPDIR:-/tmp}/repvit-mm-mmcv.XXXXXX")"
        log="$CACHE/logs/$(basename "$WHEEL_DIR").log"
        mkdir -p "$CACHE/logs"
        step "downloading the mmcv $MMCV_VERSION sdist"
        "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
            -d "$build_dir" "mmcv==$MMCV_VERSION" >"$log" 2>&1 \
            || die "could not download the mmcv sdist (log: $log)"
        tar -xzf "$build_dir"/mmcv-"$MMCV_VERSION".tar.gz -C "$build_dir"
        src="$build_dir/mmcv-$MMCV_VERSION"
        "${PIP[@]}" install -q -c "$CONSTRAINTS" numpy packaging psutil mmengine >>"$log" 2>&1 \
            || die "could not install mmcv's build requirements (log: $log)"
        start=$(date +%s)
        if [[ "$COMPILED_OPS" == 1 ]]; then
            # torch >= 2.10 headers use C++20 features; mmcv 2.1.0 hard-codes -std=c++17.
            sed -i 's/c++17/c++20/g' "$src/setup.py"
            grep -q 'c++20' "$src/setup.py" || die "could not patch the C++ standard in $src/setup.py"
            step "compiling mmcv $MMCV_VERSION ops ($flavour) - about 13 min on 2 cores; log: $log"
            (
                cd "$src"
                MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
                    "${PIP[@]}" wheel -v --no-build-isolation --no-deps -w "$build_dir/dist" . >>"$log" 2>&1
            ) &
            build_pid=$!
            while kill -0 "$build_pid" 2>/dev/null; do
                sleep 30
                kill -0 "$build_pid" 2>/dev/null || break
                n=$(grep -oE '^ *\[[0-9]+/[0-9]+\]' "$log" | tail -n 1 | tr -d ' []' || true)
                printf '    ... compiling (%ds elapsed, ninja step %s)\n' $(( $(date +%s) - start )) "${n:-?}"
            done
            wait "$build_pid" || {
                reason="$(grep -m1 -E 'error:|Error' "$log" || echo 'see log')"
                die "mmcv build failed: $reason (full log: $log; build dir $build_dir kept)"
            }
        else
            # MMCV_WITH_OPS=0 names the distribution mmcv-lite, and mmdet / mmseg / mmpretrain require
            # "mmcv": keep the name. Our _ext.py serves mmcv.ops' kernels from torchvision (repvit_mm/ops).
            sed -i "s/name='mmcv' if os.getenv('MMCV_WITH_OPS', '1') == '1' else 'mmcv-lite'/name='mmcv'/" \
                "$src/setup.py"
            grep -q "^    name='mmcv',$" "$src/setup.py" \
                || die "could not patch the distribution name in $src/setup.py"
            cp "$MMCV_EXT" "$src/mmcv/_ext.py"
            step "building mmcv $MMCV_VERSION without compiled ops (its ops from torchvision); log: $log"
            (cd "$src" && MMCV_WITH_OPS=0 "${PIP[@]}" wheel -v --no-build-isolation --no-deps \
                -w "$build_dir/dist" . >>"$log" 2>&1) || die "mmcv build failed (full log: $log)"
        fi
        # Publish atomically so an interrupted build never leaves a half-written cache entry.
        mkdir -p "$CACHE/wheels"
        tmp_dir="$(mktemp -d "$CACHE/wheels/.tmp.XXXXXX")"
        cp "$build_dir"/dist/mmcv-*.whl "$tmp_dir"/
        touch "$tmp_dir/.complete"
        rm -rf "$WHEEL_DIR"
        mv "$tmp_dir" "$WHEEL_DIR"
        rm -rf "$build_dir"
        step "mmcv built in $(( $(date +%s) - start ))s, wheel cached in $WHEEL_DIR"
    else
        step "using cached mmcv wheel from $WHEEL_DIR"
    fi
    "${PIP[@]}" install -q --force-reinstall --no-deps "$WHEEL_DIR"/mmcv-*.whl \
        || die "could not install the cached mmcv wheel in $WHEEL_DIR (delete it to rebuild)"
fi

# ---------------------------------------------------------------- 4. the package and the rest of the stack
step "repvit-mm and the OpenMMLab stack (mmengine, mmpretrain, mmdet, mmseg, timm; extras deploy, plots, tests)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" -e "$ROOT[deploy,plots,tests]" \
    || die "pip could not install repvit-mm (see the pip output above)"
# mim's dependency opendatalab pins setuptools 60 / requests 2.28 (only `mim download --dataset` uses it);
# the rest of openmim's dependencies come with the [tests] extra.
"${PIP[@]}" install -q --no-deps "openmim==$(pinned openmim)" || die "pip could not install openmim"
# mim finds a package's configs and model index under site-packages, where an editable install has none
bash "$ROOT/tools/link_for_mim.sh" "$PY" || die "could not link repvit_mm into site-packages for mim"

step "checking the installation"
"$PY" - <<'PYEOF' || die "the installed stack does not import (see above)"
import mmcv, mmcv.ops, mmdet, mmengine, mmpretrain, mmseg, timm, torch, torchvision
import repvit_mm
from mmcv.ops import get_compiler_version
print(f"    torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, "
      f"mmengine {mmengine.__version__}, mmpretrain {mmpretrain.__version__}, mmdet {mmdet.__version__}, "
      f"mmseg {mmseg.__version__}, timm {timm.__version__}")
print(f"    mmcv ops: {get_compiler_version()}")
PYEOF
echo "$fingerprint" >"$STAMP"
step "done: activate with 'source $VENV/bin/activate'"
exit 0
}
