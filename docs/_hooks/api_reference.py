"""MkDocs hook: build the API reference from the package's ``__all__`` lists at build time.

The reference pages are generated, never written by hand, so they follow the code when names
move between modules: every public package of ``medllama_fusion`` (the root, its subpackages and
its top-level modules, none private), plus the few modules in ``MODULES`` that users import by
their own path, contributes its ``__all__``; each name is documented once, on the page of the
most specific public module that exports it, and rendered by mkdocstrings from the module that
defines it. The packages in ``EXCLUDED`` are left out: the reference documents what users import,
not the command line's internals. The root page lists the names importable from
``medllama_fusion`` itself with a link to each. The hook also drops pages from the ``nav`` that
are not (yet) in ``docs/`` when they are listed in ``extra.optional_pages``.

A hand-written hook (instead of mkdocs-gen-files + literate-nav) keeps the docs extra small and
the whole mechanism in one file.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PACKAGE = "medllama_fusion"
REFERENCE_DIR = "reference"
NAV_TITLE = "API reference"

# Public packages and modules left out of the reference (with everything below them), and why.
EXCLUDED = {
    f"{PACKAGE}.cli": "used as the command line, documented on the Training and the CLI page",
    f"{PACKAGE}.extras": "the check behind the optional extras, not an API of its own",
}

# Plain modules inside a subpackage that users import by their own dotted path (the docs name
# them); a subpackage's other modules are documented through the subpackage's ``__all__``.
MODULES = (
    f"{PACKAGE}.inference.checkpoints",
    f"{PACKAGE}.inference.export",
    f"{PACKAGE}.inference.pipeline",
)


def public_modules(package: str = PACKAGE) -> list[str]:
    """Return the package, its public subpackages and top-level modules, and ``MODULES``.

    Args:
        package: Dotted name of the root package.

    Returns:
        Dotted module names, the root first, then sorted; each defines ``__all__``. Private
        modules (a component starting with ``_``) and ``EXCLUDED`` packages are left out.
    """
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts):
            continue
        if any(info.name == gone or info.name.startswith(f"{gone}.") for gone in EXCLUDED):
            continue
        # Subpackages at any depth, plain modules directly under the root or listed in MODULES.
        if not info.ispkg and len(parts) > 2 and info.name not in MODULES:
            continue
        module = importlib.import_module(info.name)
        if isinstance(getattr(module, "__all__", None), list | tuple):
            names.append(info.name)
    return [names[0], *sorted(names[1:])]


def defining_path(module_name: str, name: str) -> str:
    """Return the dotted path of the module member that defines ``module_name.name``.

    Classes and functions name their module themselves; for other objects (constants) the module
    whose source assigns the name is found among the package's modules.

    Args:
        module_name: A module that exports ``name``.
        name: The exported name.

    Returns:
        ``<defining module>.<qualified name>``.
    """
    obj = getattr(importlib.import_module(module_name), name)
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__.startswith(PACKAGE):
        return f"{obj.__module__}.{obj.__qualname__}"
    # A constant: the deepest loaded package module holding the same object under this name
    # whose source assigns it (not an import).
    candidates = []
    for loaded_name, loaded in list(sys.modules.items()):
        if not loaded_name.startswith(PACKAGE) or loaded is None:
            continue
        if vars(loaded).get(name, _MISSING) is obj and _assigns(loaded, name):
            candidates.append(loaded_name)
    if not candidates:
        return f"{module_name}.{name}"
    return f"{max(candidates, key=lambda candidate: candidate.count('.'))}.{name}"


_MISSING = object()


def _sibling(name: str) -> ModuleType:
    """Import the module ``<name>.py`` beside this hook (MkDocs loads hooks by file path)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_hooks_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assigns(module: Any, name: str) -> bool:
    """Return whether ``module``'s source assigns ``name`` at top level (not an import)."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return False
    return any(line.startswith((f"{name} =", f"{name}:")) for line in source.splitlines())


def reference_pages(package: str = PACKAGE) -> dict[str, str]:
    """Return the generated reference pages, ``{docs-relative path: Markdown}``.

    Args:
        package: Dotted name of the root package.

    Returns:
        One page per public module that documents at least one name, plus the root page.
    """
    modules = public_modules(package)
    exported = {module: list(importlib.import_module(module).__all__) for module in modules}
    owner: dict[str, str] = {}  # name -> most specific public module exporting it
    for module in sorted(modules, key=lambda item: item.count("."), reverse=True):
        for name in exported[module]:
            if not name.startswith("_"):
                owner.setdefault(name, module)
    pages: dict[str, str] = {}
    anchors: dict[str, str] = {}
    for module in modules[1:]:
        own = [name for name in exported[module] if owner.get(name) == module]
        if not own:
            continue
        doc = inspect.getdoc(importlib.import_module(module)) or ""
        # The module's first paragraph, with Sphinx roles as code as in the rendered docstrings.
        summary = _sibling("sphinx_roles").roles_to_code(doc.split("\n\n", 1)[0])
        lines = [f"# `{module}`", "", summary, ""]
        for name in own:
            path = defining_path(module, name)
            anchors[name] = path
            lines += [f"::: {path}", "    options:", f'      heading: "{name}"', ""]
        pages[f"{REFERENCE_DIR}/{module}.md"] = "\n".join(lines)
    root_names = [name for name in exported[package] if not name.startswith("_")]
    lines = [
        f"# `{package}`",
        "",
        "Generated from the `__all__` lists of the package and its public subpackages. The names",
        f"below can be imported from `{package}` directly; the pages in this section document",
        "every public class, function and constant of each subpackage. The command line",
        f"(`{package}.cli`) is documented in [Training and the CLI](../training.md).",
        "",
        "| name | documented in |",
        "|---|---|",
    ]
    for name in sorted(root_names, key=str.lower):
        module = owner[name]
        target = anchors.get(name)
        link = f"[`{name}`][{target}]" if target else f"`{name}`"
        lines.append(f"| {link} | [`{module}`]({module}.md) |")
    pages[f"{REFERENCE_DIR}/index.md"] = "\n".join(lines) + "\n"
    return pages


_PAGES: dict[str, str] = {}


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Generate the reference pages, add them to the nav and drop absent optional pages."""
    _PAGES.clear()
    _PAGES.update(reference_pages())
    docs_dir = Path(config.docs_dir)
    optional = set(config.extra.get("optional_pages", []))
    nav = [_drop_absent(entry, docs_dir, optional) for entry in config.nav or []]
    # Plain-text labels (the theme shows nav titles verbatim); below the root page, the module's
    # path inside the package, which keeps long ones from being cut off in the sidebar.
    reference = [{PACKAGE: f"{REFERENCE_DIR}/index.md"}]
    reference += [
        {Path(path).stem.removeprefix(f"{PACKAGE}."): path}
        for path in sorted(_PAGES)
        if not path.endswith("index.md")
    ]
    config.nav = [entry for entry in nav if entry is not None] + [{NAV_TITLE: reference}]
    return config


def _drop_absent(entry: Any, docs_dir: Path, optional: set[str]) -> Any:
    """Return the nav ``entry`` without optional pages missing from ``docs_dir``."""
    if isinstance(entry, str):
        return None if entry in optional and not (docs_dir / entry).exists() else entry
    if isinstance(entry, dict):
        (title, value), *_ = entry.items()
        if isinstance(value, list):
            kept = [item for item in (_drop_absent(v, docs_dir, optional) for v in value) if item]
            return {title: kept} if kept else None
        return {title: value} if _drop_absent(value, docs_dir, optional) else None
    return entry


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated reference pages to the site's files."""
    for path, content in _PAGES.items():
        files.append(File.generated(config, path, content=content))
    return files
