#!/usr/bin/env python3
"""Drop-in replacement for MInt's execute_remote_command.sample.py, run by mint-bridge.

Put this file where the original was; module programs keep calling it with the same
arguments (client_name:HOST client_cmd:PROGRAM client_files:A,B,C). If this Python cannot
import mint-bridge, the `mint-bridge` command ($MINT_BRIDGE, else the one on PATH) is used.
"""

import os
import sys

try:
    from bridge.client.legacy.execute_remote_command import main
except ImportError:
    mint_bridge = os.environ.get("MINT_BRIDGE", "mint-bridge")
    argv = [mint_bridge, "compat", "execute-remote-command", *sys.argv[1:]]
    os.execvp(mint_bridge, argv)  # noqa: S606 - argv list, no shell

sys.exit(main(sys.argv[1:]))
