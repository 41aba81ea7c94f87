"""The site's config (``site.toml``): which command names exist and exactly what each runs.

    site_config   the file as a whole: ``[site]``, loading, what a request is checked against
    commands      ``[commands.<name>]``: program, argv and environment templates, returns
    params        ``[commands.<name>.params.<param>]``: types and rules of parameter values
    resources     ``[commands.<name>.resources]``: batch resources, rendered per job
    agent_table   ``[agent]``: how a pull site's agent reaches the broker

The names other modules use are re-exported here; nothing in this package starts, stages or
follows a job.
"""

from bridge.site.config.agent_table import AgentConfig
from bridge.site.config.commands import BUILTIN_FIELDS, CommandSpec
from bridge.site.config.params import DEFAULT_STRING_PATTERN, PARAM_TYPES, ParamSpec, render_value
from bridge.site.config.site_config import SiteConfig, load_site_config

__all__ = [
    "BUILTIN_FIELDS",
    "DEFAULT_STRING_PATTERN",
    "PARAM_TYPES",
    "AgentConfig",
    "CommandSpec",
    "ParamSpec",
    "SiteConfig",
    "load_site_config",
    "render_value",
]
