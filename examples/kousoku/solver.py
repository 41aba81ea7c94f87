#!/usr/bin/env python3
"""Sample solver: fast fatigue prediction from yield strength, tensile strength and reduction
of area, in the spirit of MInt's "kousoku" sample (which runs Abaqus at the site).

Reads the three module inputs from the work dir, estimates the strain-life (Coffin-Manson-
Basquin) constants with the modified universal slopes of Muralidharan and Manson (1988),
derives the cyclic stress-strain curve (Ramberg-Osgood with n' = b/c, K' = sf'/ef'^n'), writes
it as CSV, fills the site's private model template into an input deck, and reports the strain
amplitude that gives the requested life. Units: MPa; reduction of area as a fraction or in %.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

YOUNGS_MODULUS = 206_000.0  # MPa, carbon and low-alloy steels


def read_value(name: str) -> float:
    text = Path(name).read_text(encoding="utf-8").split()
    if not text:
        raise SystemExit(f"solver: input {name} is empty")
    return float(text[0])


def strain_life_constants(ts: float, ra: float) -> dict[str, float]:
    ra = ra / 100.0 if ra > 1.0 else ra
    if not 0.0 < ra < 1.0:
        raise SystemExit(f"solver: reduction of area {ra} is outside (0, 1)")
    true_ductility = math.log(1.0 / (1.0 - ra))
    ratio = ts / YOUNGS_MODULUS
    sf = 0.623 * YOUNGS_MODULUS * ratio**0.832  # fatigue strength coefficient
    ef = 0.0196 * true_ductility**0.155 * ratio**-0.53  # fatigue ductility coefficient
    b, c = -0.09, -0.56
    n_cyc = b / c
    k_cyc = sf / ef**n_cyc
    return {"sf": sf, "ef": ef, "b": b, "c": c, "n_cyc": n_cyc, "k_cyc": k_cyc}


def strain_amplitude(k: dict[str, float], cycles: float) -> float:
    reversals = 2.0 * cycles
    return k["sf"] / YOUNGS_MODULUS * reversals ** k["b"] + k["ef"] * reversals ** k["c"]


def cyclic_curve(k: dict[str, float], ys: float, points: int) -> list[tuple[float, float]]:
    top = max(ys * 1.6, k["k_cyc"] * 0.05 ** k["n_cyc"])
    curve = []
    for i in range(points + 1):
        stress = top * i / points
        strain = stress / YOUNGS_MODULUS + (stress / k["k_cyc"]) ** (1.0 / k["n_cyc"])
        curve.append((strain, stress))
    return curve


def plastic_table(curve: list[tuple[float, float]], ys: float) -> str:
    rows = []
    for strain, stress in curve:
        plastic = strain - stress / YOUNGS_MODULUS
        if stress >= ys * 0.8:
            rows.append(f"{stress:.3f}, {max(plastic, 0.0):.6e}")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="site-private model template")
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=50)
    args = parser.parse_args(argv)

    ys = read_value("yield_strength.dat")
    ts = read_value("tensile_strength.dat")
    ra = read_value("reduction_area.dat")
    print(f"solver: YS={ys} MPa TS={ts} MPa RA={ra}", flush=True)
    k = strain_life_constants(ts, ra)
    curve = cyclic_curve(k, ys, args.points)
    with open("sscurve.csv", "w", encoding="utf-8") as out:
        out.write("strain,stress_MPa\n")
        out.writelines(f"{e:.6e},{s:.3f}\n" for e, s in curve)
    template = Path(args.model).read_text(encoding="utf-8")
    deck = template.replace("{{ELASTIC}}", f"{YOUNGS_MODULUS:.1f}, 0.3").replace(
        "{{PLASTIC_TABLE}}", plastic_table(curve, ys)
    )
    Path("input_deck.inp").write_text(deck, encoding="utf-8")
    amplitude = strain_amplitude(k, args.cycles)
    with open("fatigue_result.txt", "w", encoding="utf-8") as out:
        out.write(f"cycles_to_failure {args.cycles}\n")
        out.write(f"strain_amplitude {amplitude:.6e}\n")
        for key, value in k.items():
            out.write(f"{key} {value:.6g}\n")
    print(f"solver: strain amplitude for {args.cycles} cycles: {amplitude:.4e}", flush=True)
    print("solver: wrote sscurve.csv, fatigue_result.txt", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
