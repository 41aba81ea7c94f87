"""Update an existing site config in place: setup edits only the keys it owns.

A site config belongs to the site admin once written: commands, parameters, comments and the
order of everything are theirs. A later ``setup site`` (adding the broker method to an SSH site,
a new broker URL or CA bundle) changes only the ``[agent]`` table's ``url``, ``token_file``,
``ca_bundle`` and ``allow_http``, through ``tomlkit``, which keeps every other byte of the file
as it was. Nothing here writes: the caller shows the diff and applies it with the plan.
"""

from __future__ import annotations

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Table

from node_setup.errors import SetupError
from node_setup.site_templates import Layout, render_agent_table


def update_site_config(
    path: str,
    old: str,
    site_id: str,
    agent: tuple[str, str | None, bool] | None,
    paths: Layout,
) -> str:
    """``old`` with the ``[agent]`` table set to ``agent`` = (url, ca_bundle, allow_http).

    ``agent`` None (the SSH method) leaves the file as it is: an ``[agent]`` table the admin
    keeps is theirs. The site name must match ``site_id``: another name means another site.
    """
    try:
        doc = tomlkit.parse(old)
    except TOMLKitError as exc:
        raise SetupError(
            f"{path} is not valid TOML ({exc}); fix it, or move it away to have setup write a "
            "new one"
        ) from exc
    _check_name(path, doc, site_id)
    if agent is None:
        return old
    url, ca_bundle, allow_http = agent
    table = doc.get("agent")
    if table is None:
        # A new table goes at the end, with the same comments a fresh config has.
        return old.rstrip("\n") + "\n" + render_agent_table(paths, url, ca_bundle, allow_http)
    if not isinstance(table, Table):
        raise SetupError(f"{path}: agent is not a table; make it [agent] or remove it")
    table["url"] = url
    table["token_file"] = paths.token_file
    # Set when given, kept otherwise: a rerun without --ca-bundle must not drop the admin's.
    if ca_bundle:
        table["ca_bundle"] = ca_bundle
    if allow_http:
        table["allow_http"] = True
    return tomlkit.dumps(doc)


def _check_name(path: str, doc: tomlkit.TOMLDocument, site_id: str) -> None:
    site = doc.get("site")
    name = site.get("name") if isinstance(site, Table) else None
    if name is not None and str(name) != site_id:
        raise SetupError(
            f"{path} is the config of site {str(name)!r}, not {site_id!r}: pass "
            f"--site-id {name}, or --config-dir for another site's config"
        )

