"""The HTTPS broker between MInt's bridge node and sites that open no inbound port.

It imports only the shared core (``bridge.core``: job, staging, errors, config helpers), never
the site side (``bridge.site``) or the bridge-node side (``bridge.client``).
"""
