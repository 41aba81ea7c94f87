"""``mint-bridge health``: checks with a status, a measured value and a one-line fix each.

One module per family of checks: ``ssh`` (a site over SSH, from the bridge node), ``openssh``
(what a site with ``client = "openssh"`` adds: the ``ssh`` binary, its control sockets),
``broker`` (the HTTPS broker), ``site`` (at the site itself) with ``login_shell`` (the site
account's shell, as sshd starts it before each job); ``bridge_node`` picks the sites of the
bridge config, ``runner`` runs them concurrently within the timeout, ``report`` renders the
table, the JSON document and the exit code, ``ping`` is the cheap ``site_ping`` round trip
that can also run on a schedule, and ``job_probe`` sends the built-in probe job through a
site's real path (``--probe``, ``sites test``). ``command`` holds the click commands the CLI
attaches.
"""
