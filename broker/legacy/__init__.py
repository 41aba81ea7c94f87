"""The original MInt external-computing API (``/mi-distcomp-api/``) on the broker's own store.

``api_workflow`` serves the original workflow client, ``api_site`` the original site poller;
``model`` holds the original's words and rules without HTTP, ``config`` and ``ini`` the
``[legacy]`` section and the import of the original ini file.
"""
