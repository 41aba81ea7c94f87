"""mint-bridge: run MInt workflow steps on computers MInt does not own.

The package holds both ends of the bridge and what they share:

- ``bridge.client``: the bridge-node side (``mint-bridge run``), which never imports site code;
- ``bridge.site``: the site side (``mint-bridge site serve-ssh``), which never imports client code;
- shared core: ``job``, ``protocol``, ``staging``, ``site_config``, ``bridge_config``, ``errors``.
"""

__version__ = "0.1.0"

#: Version of the request/response protocol spoken over SSH (or a local pipe).
PROTOCOL_VERSION = 1
