"""Setting up a site and the bridge node, and checking their health.

- ``site_setup``: ``mint-bridge setup site``, run by a site admin on the external computer:
  directories, a commented site config, MInt's ``authorized_keys`` line (SSH) or the agent's
  token and systemd unit (broker).
- ``bridge_setup``: ``mint-bridge setup bridge-node`` and ``setup add-site``, run on MInt's
  bridge node: the bridge config, a dedicated key, host keys pinned only after their
  fingerprint matched the one the site admin gave.
- ``health``: ``mint-bridge health``, checks with monitoring-style exit codes.

``cli`` holds the click group ``setup`` (and re-exports ``health``); ``console`` the terminal
side both share. Setup commands build a whole plan of changes first (``changes``), so
``--dry-run`` shows everything and a refusal stops before anything is touched. Nothing here
ever prints, logs or passes on a command line an agent or client token.
"""
