"""The bridge-node end: ``mint-bridge run`` and the transports that reach a site.

Nothing here imports ``bridge.site``; a ``local`` site is reached by starting the site entry
point as a separate process, over pipes, speaking the very same protocol as over SSH.
"""
