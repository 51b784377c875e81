"""MkDocs hook: keep ``site_url`` a folder when mike appends the version it deploys.

mike's plugin (added by ``mike deploy``) turns ``site_url`` into ``<site_url><version>``, without
a trailing slash. The 404 page is the one page whose links are absolute, built from that URL, and
Material for MkDocs finds ``versions.json`` (its version selector) at ``../versions.json`` from
it: without the slash that resolves one folder too high, and the 404 page shows no selector.
MkDocs runs hooks after the plugins, so this sees mike's value.
"""

from __future__ import annotations

from mkdocs.config.defaults import MkDocsConfig


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """End ``site_url`` with a slash."""
    if config.site_url and not config.site_url.endswith("/"):
        config.site_url += "/"
    return config
