"""mint-bridge: run MInt workflow steps on computers MInt does not own.

- ``bridge.core``: what both ends and the broker share (job, protocol, staging, paths, errors,
  units, config loading, the broker's HTTP session); it imports nothing else of ours;
- ``bridge.client``: MInt's bridge node (``mint-bridge run``), over the core only;
- ``bridge.site``: the external site (``mint-bridge site serve-ssh``, ``site agent``), over the
  core and ``schedulers``; client and site never import each other;
- ``bridge.cli``, ``bridge.launcher``: the ``mint-bridge`` command that ties them together.

This root module holds only the version, so any layer may import it.
"""

__version__ = "0.1.0"
