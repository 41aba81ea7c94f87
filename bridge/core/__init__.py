"""The shared core: what the bridge node, the site and the broker all speak.

Imports nothing of ours beyond this package (and the root ``bridge.__version__``); a test
walks the imports and fails when that changes.
"""
