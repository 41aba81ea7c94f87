#!/bin/bash
# The original site convention: runs in the work dir, its output logged by the caller.
echo "legacy script running in $(pwd)"
ls *.dat | sort > listing.txt
echo "legacy script done"
