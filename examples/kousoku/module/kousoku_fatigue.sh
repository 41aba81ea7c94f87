#!/bin/bash
# MInt module program: fast fatigue prediction at an external site, through mint-bridge.
#
#   kousoku_fatigue.sh --yield_strength F --tensile_strength F --reduction_area F
#                      [--cycles N] [--sscurve OUT] [--fatigue_result OUT]
#
# Runs on the bridge node (pbsNodeGroup ssh-node01). Every argument is used or refused (exit
# 64); the job runs once; the site keeps and later removes its work dir; the exit code is the
# solver's, or mint-bridge's documented code when the bridge itself failed.
# Settings: MINT_BRIDGE_SITE (default rme-u-tokyo), MINT_BRIDGE (the mint-bridge command).
set -euo pipefail

site="${MINT_BRIDGE_SITE:-rme-u-tokyo}"
bridge="${MINT_BRIDGE:-mint-bridge}"
declare -A inputs=() outputs=()
cycles=""

usage() { echo "kousoku_fatigue: $1" >&2; exit 64; }

while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage "option $1 needs a value"
    case "$1" in
        --yield_strength|--tensile_strength|--reduction_area) inputs[${1#--}]="$2" ;;
        --sscurve|--fatigue_result) outputs[${1#--}]="$2" ;;
        --cycles) cycles="$2" ;;
        *) usage "unknown argument $1" ;;
    esac
    shift 2
done

# The site expects these exact names; MInt's port files are often symlinks with other names,
# so stage links named as the site expects, pointing at the real files.
stage=$(mktemp -d "${TMPDIR:-/tmp}/kousoku.XXXXXX")
trap 'rm -rf "$stage"' EXIT
send=()
for port in yield_strength tensile_strength reduction_area; do
    [ -n "${inputs[$port]:-}" ] || usage "missing --$port"
    real=$(readlink -f -- "${inputs[$port]}")
    [ -f "$real" ] || usage "--$port ${inputs[$port]} is not a file"
    ln -s -- "$real" "$stage/$port.dat"
    send+=(-i "$stage/$port.dat")
done
params=()
[ -z "$cycles" ] || params=(-p "cycles=$cycles")

"$bridge" run --site "$site" --command fatigue "${send[@]}" "${params[@]}" -o results

declare -A produced=([sscurve]=results/sscurve.csv [fatigue_result]=results/fatigue_result.txt)
for port in "${!outputs[@]}"; do
    ln -sfn -- "$(readlink -f -- "${produced[$port]}")" "${outputs[$port]}"
done
