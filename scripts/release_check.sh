#!/usr/bin/env bash
# Build the release files and check them the way a user will get them. The release workflow
# (.github/workflows/release.yml) and CI (.ci/run) both run this script, so a tag is published
# only after exactly these checks passed:
#
#   1. the version: pyproject.toml's (the only place it is written), equal to the tag when one
#      is given, with a dated section in CHANGELOG.md, written to <out>/release_notes.md;
#   2. build the sdist, then the wheel FROM the sdist (python -m build), so the sdist is
#      complete enough to build; check the sdist holds the tests, docs, changelog, examples;
#   3. twine check --strict (the metadata and README render on PyPI);
#   4. install the wheel in a new virtual environment and run, from an empty folder:
#      `medllama-fusion --version`, `medllama-fusion --help`, an import smoke test (the installed
#      copy is the one imported, its version is the package's, the presets are packaged) and
#      `medllama-fusion fit --help` (the CLI parses with the packaged configs).
#
# Usage: scripts/release_check.sh [--tag vX.Y.Z] [--fresh] [--out DIR]
#   --tag    also check that the tag is v<version> and that its CHANGELOG section has a date.
#   --fresh  install the wheel WITH its dependencies into an empty environment (what
#            `pip install medllama-fusion` does; needs the package index, and minutes for
#            torch), check it with `pip check`, and also run a one-epoch quickstart fit, test and
#            predict there: the core install, without any extra, runs them.
#            Default (fast): the wheel is installed with --no-deps and the new environment sees
#            the current one's packages (a .pth file), so nothing is downloaded.
#   --out    folder for dist/, the environment and release_notes.md (default: a new temp dir).
# PYTHON (default: python) is the interpreter that builds and creates the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python}

TAG=""
FRESH=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) TAG="$2"; shift 2 ;;
        --fresh) FRESH=1; shift ;;
        --out) OUT="$2"; shift 2 ;;
        *) echo "release_check: unknown argument $1" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/medllama-fusion-release.XXXXXX")}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
step() { echo "release_check: [$(( $(date +%s) - START )) s] $*"; }

# --- 1. version, tag, changelog ------------------------------------------------------------
VERSION=$("$PYTHON" - "$ROOT/pyproject.toml" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
project = text.split("[project]", 1)[1].split("\n[", 1)[0]
print(re.search(r'^version\s*=\s*"([^"]+)"', project, re.M).group(1))
EOF
)
step "version $VERSION"
if [ -n "$TAG" ] && [ "$TAG" != "v$VERSION" ]; then
    echo "release_check: tag $TAG does not match pyproject.toml's version $VERSION (tag v$VERSION)" >&2
    exit 1
fi
"$PYTHON" - "$ROOT/CHANGELOG.md" "$VERSION" "$OUT/release_notes.md" "${TAG:+dated}" <<'EOF'
import re, sys
path, version, notes, dated = sys.argv[1:5]
text = open(path, encoding="utf-8").read()
match = re.search(rf"^## \[{re.escape(version)}\](?P<date>.*)$\n(?P<body>.*?)(?=^## |^\[)", text, re.M | re.S)
if match is None:
    sys.exit(f"release_check: CHANGELOG.md has no '## [{version}] - YYYY-MM-DD' section")
if dated and not re.fullmatch(r" - \d{4}-\d{2}-\d{2}", match["date"]):
    sys.exit(f"release_check: the CHANGELOG.md heading of {version} needs its release date")
if f"[{version}]: " not in text:
    sys.exit(f"release_check: CHANGELOG.md has no compare link '[{version}]: ...' at the bottom")
open(notes, "w", encoding="utf-8").write(match["body"].strip() + "\n")
EOF
step "CHANGELOG.md section of $VERSION written to $OUT/release_notes.md"

# --- 2. build: sdist, then the wheel from the sdist ------------------------------------------
if ! "$PYTHON" -c "import build, twine" 2>/dev/null; then
    "$PYTHON" -m pip install -q "build>=1.2" "twine>=6"
fi
rm -rf "$OUT/dist"
"$PYTHON" -m build --outdir "$OUT/dist" "$ROOT" > "$OUT/build.log" 2>&1 || {
    tail -n 40 "$OUT/build.log" >&2
    exit 1
}
SDIST="$OUT/dist/medllama_fusion-$VERSION.tar.gz"
WHEEL="$OUT/dist/medllama_fusion-$VERSION-py3-none-any.whl"
[ -f "$SDIST" ] && [ -f "$WHEEL" ] || { ls "$OUT/dist" >&2; exit 1; }
"$PYTHON" - "$SDIST" "$WHEEL" <<'EOF'
import sys, tarfile, zipfile
sdist, wheel = sys.argv[1:3]
with tarfile.open(sdist) as archive:
    names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
needed = [
    "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "CITATION.cff", "mkdocs.yml",
    "requirements/min.txt", "requirements/test-assets.txt", "tests/conftest.py",
    "tests/cli/conftest.py", "tests/conf/tiny.yaml", "docs/index.md",
    "docs/_hooks/api_reference.py", "examples/custom_fusion.py", "benchmarks/real_reports.py",
    "src/medllama_fusion/configs/quickstart.yaml",
]
missing = [name for name in needed if name not in names]
junk = [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".ckpt"))]
with zipfile.ZipFile(wheel) as archive:
    wheel_names = set(archive.namelist())
for name in ("medllama_fusion/py.typed", "medllama_fusion/configs/quickstart.yaml",
             "medllama_fusion/configs/paper/base.yaml"):
    if name not in wheel_names:
        missing.append(f"wheel: {name}")
junk += [n for n in wheel_names if n.startswith(("tests/", "docs/", "benchmarks/"))]
if missing or junk:
    sys.exit(f"release_check: missing {missing}; should not be there {junk[:10]}")
tests = sum(1 for n in names if n.startswith("tests/") and n.endswith(".py"))
print(f"release_check: sdist {len(names)} files ({tests} test modules), wheel {len(wheel_names)}")
EOF
step "built $(basename "$SDIST") and $(basename "$WHEEL") (from the sdist)"

# --- 3. twine ----------------------------------------------------------------------------------
"$PYTHON" -m twine check --strict "$SDIST" "$WHEEL"
step "twine check --strict passed"

# --- 4. install the wheel in a new environment and use it -------------------------------------
VENV="$OUT/venv"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
if [ "$FRESH" = 1 ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "$WHEEL"
    "$VENV/bin/python" -m pip check
    "$VENV/bin/python" -m pip list --format=freeze > "$OUT/installed.txt"
    step "installed the wheel with its dependencies ($(wc -l < "$OUT/installed.txt") distributions)"
else
    "$VENV/bin/python" -m pip install -q --no-deps "$WHEEL"
    # The dependencies come from the current environment, after the new one's own packages
    # (a .pth line only adds the folder: its own .pth files, e.g. an editable install of this
    # checkout, are not run, so the wheel's copy is the one imported).
    SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    "$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$SITE/_release_check_dependencies.pth"
    step "installed the wheel with --no-deps (dependencies from the current environment)"
fi
SMOKE="$OUT/smoke"
rm -rf "$SMOKE"
mkdir -p "$SMOKE"
cd "$SMOKE"  # an empty folder: nothing of the checkout can be imported by accident
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MEDLLAMA_FUSION_NUM_THREADS=1
unset PYTHONPATH
printf 'release_check: $ medllama-fusion --version\n%s\n' "$("$VENV/bin/medllama-fusion" --version)"
[ "$("$VENV/bin/medllama-fusion" --version)" = "medllama-fusion $VERSION" ]
"$VENV/bin/medllama-fusion" --help > help.txt
LISTED=$("$VENV/bin/python" -c "from medllama_fusion.cli.console import SUBCOMMANDS; print('{' + ','.join(SUBCOMMANDS) + '}')")
grep -qF "$LISTED" help.txt
grep -q "quickstart" help.txt
step "medllama-fusion --version and --help"
"$VENV/bin/python" - "$VENV" "$VERSION" <<'EOF'
import sys
from pathlib import Path

venv, version = Path(sys.argv[1]).resolve(), sys.argv[2]
import medllama_fusion
from medllama_fusion import (
    BackboneConfig, FusionClassifier, FusionDataModule, FusionPipeline, ParallelFusion,
    VisionConfig, list_presets, preset_path,
)

assert Path(medllama_fusion.__file__).resolve().is_relative_to(venv), medllama_fusion.__file__
assert medllama_fusion.__version__ == version, (medllama_fusion.__version__, version)
assert "quickstart" in list_presets() and preset_path("quickstart").is_file()
fusion = ParallelFusion(
    backbone=BackboneConfig(config={"hidden_size": 32, "intermediate_size": 64,
        "num_attention_heads": 2, "num_hidden_layers": 4, "vocab_size": 64}, num_text_layers=1),
    vision=VisionConfig(image_size=16, patch_size=8, num_layers=1),
    num_cross_layers=1, num_labels=3,
)
import torch
out = fusion(input_ids=torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5),
             pixel_values=torch.zeros(2, 1, 16, 16))
assert tuple(out.logits.shape) == (2, 3)
print(f"release_check: import smoke test passed (medllama_fusion {medllama_fusion.__version__} "
      f"from {Path(medllama_fusion.__file__).parent})")
EOF
"$VENV/bin/medllama-fusion" fit --help > fit_help.txt
grep -q -- "--data.help" fit_help.txt
step "import smoke test and medllama-fusion fit --help"

if [ "$FRESH" = 1 ]; then
    QUICK=(--config quickstart --trainer.enable_progress_bar false)
    "$VENV/bin/medllama-fusion" fit "${QUICK[@]}" --trainer.max_epochs 1 \
        --trainer.limit_train_batches 2 --trainer.limit_val_batches 2 > fit.log 2>&1 \
        || { tail -n 40 fit.log >&2; exit 1; }
    "$VENV/bin/medllama-fusion" test "${QUICK[@]}" --ckpt_path last > test.log 2>&1 \
        || { tail -n 40 test.log >&2; exit 1; }
    "$VENV/bin/medllama-fusion" predict "${QUICK[@]}" --ckpt_path last > predict.log 2>&1 \
        || { tail -n 40 predict.log >&2; exit 1; }
    step "core install: a one-epoch quickstart fit, test and predict ran (logs in $SMOKE)"
fi
step "all checks passed; release files in $OUT/dist"
