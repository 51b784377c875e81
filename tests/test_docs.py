"""The documentation site builds without warnings, and the commands on its pages run.

Every fenced shell block on a docs page carries a visible title: ``Run by the docs tests``
(run here, in a fresh folder, in page order) or ``Not run by the tests: <why>``. A YAML block
titled with a file name is written to that folder before the page's commands run.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import medllama_fusion
from medllama_fusion.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUN = "Run by the docs tests"
NOT_RUN = "Not run by the tests: "
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w-]*)(?P<attrs>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)
TITLE = re.compile(r'title="(?P<title>[^"]*)"')
COMMAND_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    """One fenced code block of a docs page."""

    page: str
    line: int
    language: str
    title: str | None
    body: str


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("**/*.md"))


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        title = TITLE.search(match["attrs"])
        indent = len(match["indent"])
        body = "\n".join(line[indent:] for line in match["body"].splitlines())
        found.append(
            Block(
                page=str(page.relative_to(DOCS)),
                line=text.count("\n", 0, match.start()) + 1,
                language=match["lang"],
                title=title["title"] if title else None,
                body=body,
            )
        )
    return found


def shell_blocks(page: Path) -> list[Block]:
    return [block for block in blocks(page) if block.language in SHELL_LANGUAGES]


def test_fence_parser_reads_titles() -> None:
    page = DOCS / "getting_started.md"
    titles = {block.title for block in shell_blocks(page)}
    assert RUN in titles
    assert any(title and title.startswith(NOT_RUN) for title in titles)


def _says_whether_it_runs(title: str | None) -> bool:
    reason = (title or "").removeprefix(NOT_RUN)
    return title == RUN or (reason != title and len(reason.strip()) > 3)


@pytest.mark.parametrize("page", doc_pages(), ids=lambda page: str(page.relative_to(DOCS)))
def test_every_command_says_whether_it_runs(page: Path) -> None:
    unmarked = [
        f"{block.page}:{block.line}"
        for block in shell_blocks(page)
        if not _says_whether_it_runs(block.title)
    ]
    assert not unmarked, (
        f'shell blocks without title="{RUN}" or title="{NOT_RUN}<reason>": {unmarked}'
    )


COMMAND_START = re.compile(r"^(medllama-fusion |python |pip |PYTHONPATH=|bash )", re.MULTILINE)


@pytest.mark.parametrize("page", doc_pages(), ids=lambda page: str(page.relative_to(DOCS)))
def test_commands_are_in_shell_blocks(page: Path) -> None:
    """A command in an unlabelled (or text) block would escape the run-or-say-why check."""
    hidden = [
        f"{block.page}:{block.line}"
        for block in blocks(page)
        if block.language in {"", "text"} and COMMAND_START.search(block.body)
    ]
    assert not hidden, f"commands outside ```bash blocks: {hidden}"


LIST_ITEM = re.compile(r"^( *)(?:[-*+]|\d+\.) +\S")


def under_indented_list_lines(text: str) -> list[int]:
    """Return the lines that Python-Markdown would take out of the list item above them.

    Python-Markdown (the site's renderer) nests a list, or continues a list item after a blank
    line (a paragraph, a code block), only when it is indented by 4 spaces; with 1-3 spaces the
    nested list renders flat and the rest of the item falls out of the list.
    """
    found = []
    in_fence = in_list = after_blank = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if in_fence:
            in_fence = not (stripped.startswith("```") and not stripped.strip("`"))
            continue
        indent = len(line) - len(line.lstrip(" "))
        if not stripped:
            after_blank = True
            continue
        if LIST_ITEM.match(line):
            in_list = True
            if 0 < indent < 4:
                found.append(number)
        elif in_list and after_blank:
            if indent == 0:
                in_list = False
            elif indent < 4:
                found.append(number)
        in_fence = stripped.startswith("```")
        after_blank = False
    return found


def test_list_check_finds_under_indented_lines() -> None:
    text = "- a\n  - b\n\n- c\n\n  more of c\n\n    ```\n    code\n    ```\n\nafter\n\n  indented"
    assert under_indented_list_lines(text) == [2, 6]


@pytest.mark.parametrize("page", doc_pages(), ids=lambda page: str(page.relative_to(DOCS)))
def test_lists_are_indented_four_spaces(page: Path) -> None:
    lines = under_indented_list_lines(page.read_text(encoding="utf-8"))
    assert not lines, (
        f"{page.relative_to(DOCS)}: indent nested lists and the rest of a list item by 4 spaces "
        f"(lines {lines}); with fewer the site renders them outside the list"
    )


def _shims(folder: Path) -> dict[str, str]:
    """Return an environment whose ``python`` and ``medllama-fusion`` are this interpreter's.

    The package's own folder is appended to ``PYTHONPATH`` so that a command that sets
    ``PYTHONPATH`` itself (``PYTHONPATH=examples ...``) still imports the package under test.
    """
    package_parent = Path(medllama_fusion.__file__).resolve().parents[1]
    bin_dir = folder / ".bin"
    bin_dir.mkdir()
    prelude = f'export PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{package_parent}"\n'
    scripts = {
        "python": f'exec "{sys.executable}" "$@"\n',
        "medllama-fusion": f'exec "{sys.executable}" -m medllama_fusion "$@"\n',
    }
    for name, command in scripts.items():
        script = bin_dir / name
        script.write_text("#!/usr/bin/env bash\n" + prelude + command)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def _runnable_pages() -> list[object]:
    params: list[object] = []
    for page in doc_pages():
        if any(block.title == RUN for block in shell_blocks(page)):
            params.append(
                pytest.param(page, id=str(page.relative_to(DOCS)), marks=pytest.mark.slow)
            )
    return params


@pytest.mark.parametrize("page", _runnable_pages())
def test_page_commands_run(page: Path, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = _shims(tmp_path)
    for block in blocks(page):
        if block.language in {"yaml", "yml"} and block.title and "/" not in block.title:
            (tmp_path / block.title).write_text(block.body + "\n", encoding="utf-8")
    for block in shell_blocks(page):
        if block.title != RUN:
            continue
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.body],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        assert result.returncode == 0, (
            f"{block.page}:{block.line} exited with {result.returncode}:\n{block.body}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )


def _package_modules() -> list[object]:
    modules = [medllama_fusion]
    for info in pkgutil.walk_packages(medllama_fusion.__path__, prefix="medllama_fusion."):
        if not info.name.rsplit(".", 1)[-1].startswith("__"):
            modules.append(importlib.import_module(info.name))
    return modules


def test_troubleshooting_covers_every_data_problem_and_input_error() -> None:
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    modules = _package_modules()
    hints = [module.PROBLEM_HINTS for module in modules if hasattr(module, "PROBLEM_HINTS")]
    assert hints, "no PROBLEM_HINTS table found in the package"
    kinds = set().union(*hints)
    assert not [kind for kind in kinds if f"`{kind}`" not in page]
    errors = {
        obj.__name__
        for module in modules
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, InputError)
        and obj is not InputError
        and obj.__module__.startswith("medllama_fusion")
    }
    assert errors
    assert not [name for name in sorted(errors) if f"`{name}`" not in page]


def _api_reference_hook() -> ModuleType:
    sys.path.insert(0, str(DOCS / "_hooks"))
    try:
        return importlib.import_module("api_reference")
    finally:
        sys.path.pop(0)


def test_api_reference_documents_every_public_name() -> None:
    pages = _api_reference_hook().reference_pages()
    documented = set()
    for content in pages.values():
        documented.update(re.findall(r'^      heading: "([^"]+)"$', content, re.MULTILINE))
    public = {name for name in medllama_fusion.__all__ if not name.startswith("_")}
    assert public <= documented


def test_api_reference_leaves_out_the_command_line() -> None:
    """The CLI is documented on the Training page; the reference is what users import."""
    pages = _api_reference_hook().reference_pages()
    assert not [path for path in pages if ".cli" in path]
    assert "::: medllama_fusion.cli" not in "\n".join(pages.values())
    assert "reference/medllama_fusion.inference.pipeline.md" in pages


def test_site_builds_without_warnings(tmp_path: Path) -> None:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OMP_NUM_THREADS="1")
    package_parent = Path(medllama_fusion.__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(package_parent), env.get("PYTHONPATH", "")) if part
    )
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert (tmp_path / "site" / "reference" / "index.html").is_file()
