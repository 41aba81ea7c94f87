"""The site end of the bridge: the entry point SSH's forced command runs, and its work dirs.

Nothing here imports ``bridge.client``; both import only the shared core.
"""
