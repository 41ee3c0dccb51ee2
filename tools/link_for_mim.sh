#!/usr/bin/env bash
# Let OpenMMLab's `mim` (search, download, train, test) find repvit_mm after an editable install.
#
#   bash tools/link_for_mim.sh [PYTHON]    # PYTHON: the environment's interpreter (default: .venv/bin/python)
#
# mim looks for a package's model index, configs and tools at <site-packages>/repvit_mm/.mim (the location of
# its dist-info plus the module name; mim/utils/utils.py get_installed_path), where a regular install puts
# them. An editable install (`pip install -e .`, which tools/install.sh does) leaves only an import hook in
# site-packages, so mim finds nothing. This links <site-packages>/repvit_mm to the source package: imports
# still read the source tree, and repvit_mm/.mim links on to the repository's configs/, tools/ and
# model-index.yml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-$ROOT/.venv/bin/python}"
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
link="$site/repvit_mm"
if [[ -e "$link" && ! -L "$link" ]]; then
    echo "link_for_mim: $link is a regular install of repvit_mm; nothing to link" >&2
    exit 0
fi
ln -sfn "$ROOT/repvit_mm" "$link"
