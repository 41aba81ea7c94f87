#!/usr/bin/env python3
"""Drop-in replacement for MInt's mi-system-wf.py (API method), run by mint-bridge.

Same arguments: URL SITE TOKEN COMMAND in1:in2 out1:out2 [PARAMS]. A token on the command
line is visible to other users (ps); pass "-" to read $MINT_BRIDGE_TOKEN or "@FILE" to read a
file instead. If this Python cannot import mint-bridge, the `mint-bridge` command
($MINT_BRIDGE, else the one on PATH) is used.
"""

import os
import sys

try:
    from bridge.client.legacy.mi_system_wf import main
except ImportError:
    mint_bridge = os.environ.get("MINT_BRIDGE", "mint-bridge")
    argv = [mint_bridge, "compat", "mi-system-wf", *sys.argv[1:]]
    os.execvp(mint_bridge, argv)  # noqa: S606 - argv list, no shell

sys.exit(main(sys.argv[1:]))
