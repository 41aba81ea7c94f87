"""The kousoku-style sample module, end to end over the real sshd, as MInt would run it."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.client.node_config import EXAMPLES_DIR

MODULE = EXAMPLES_DIR / "kousoku" / "module"
E = 206_000.0


def expected_curve(ys: float, ts: float, ra: float, points: int = 50) -> list[tuple[float, float]]:
    """Modified universal slopes (Muralidharan-Manson 1988) and Ramberg-Osgood, written anew."""
    eps_f = -math.log(1.0 - ra)
    sigma_f = 0.623 * E * (ts / E) ** 0.832
    eps_fc = 0.0196 * eps_f**0.155 * (ts / E) ** -0.53
    n = 0.09 / 0.56
    k = sigma_f / eps_fc**n
    top = max(1.6 * ys, k * 0.05**n)
    return [(s / E + (s / k) ** (1 / n), s) for s in (top * i / points for i in range(points + 1))]


def expected_amplitude(ts: float, ra: float, cycles: int) -> float:
    eps_f = -math.log(1.0 - ra)
    two_n = 2.0 * cycles
    return (
        0.623 * (ts / E) ** 0.832 * two_n**-0.09
        + 0.0196 * eps_f**0.155 * (ts / E) ** -0.53 * two_n**-0.56
    )


def mint_module_dir(tmp_path: Path) -> Path:
    """A module dir like MInt's: input ports are symlinks with names of MInt's choosing."""
    store = tmp_path / "assets"
    store.mkdir()
    for name, value in (("ys", "980"), ("ts", "1150"), ("ra", "52")):
        (store / f"{name}.txt").write_text(f"{value}\n")
    module = tmp_path / "module"
    module.mkdir()
    for port, name in (("in_ys", "ys"), ("in_ts", "ts"), ("in_ra", "ra")):
        (module / port).symlink_to(store / f"{name}.txt")
    return module


@pytest.mark.parametrize("program", ["kousoku_fatigue.sh", "kousoku_fatigue.py"])
def test_sample_module_over_ssh(bridge_config: Path, tmp_path: Path, program: str) -> None:
    module = mint_module_dir(tmp_path)
    env = dict(
        os.environ,
        MINT_BRIDGE_CONFIG=str(bridge_config),
        MINT_BRIDGE_SITE="site",
        MINT_BRIDGE=str(Path(sys.executable).parent / "mint-bridge"),
    )
    argv = [
        str(MODULE / program),
        "--yield_strength", "in_ys", "--tensile_strength", "in_ts", "--reduction_area", "in_ra",
        "--cycles", "20000", "--sscurve", "out_sscurve", "--fatigue_result", "out_result",
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=module, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"solver: YS=980.0 MPa TS=1150.0 MPa RA=52.0" in proc.stdout
    rows = (module / "out_sscurve").read_text().splitlines()
    assert rows[0] == "strain,stress_MPa"
    got = [tuple(map(float, row.split(","))) for row in rows[1:]]
    want = expected_curve(980.0, 1150.0, 0.52)
    assert len(got) == len(want)
    for (e1, s1), (e2, s2) in zip(got, want, strict=True):
        assert math.isclose(e1, e2, rel_tol=1e-5, abs_tol=1e-12)
        assert math.isclose(s1, s2, rel_tol=1e-6, abs_tol=1e-3)
    result = dict(line.split() for line in (module / "out_result").read_text().splitlines())
    assert math.isclose(
        float(result["strain_amplitude"]), expected_amplitude(1150.0, 0.52, 20000), rel_tol=1e-5
    )
    # The site's private model never reaches the MInt side, in any file.
    for path in module.rglob("*"):
        if path.is_file():
            assert b"CONFIDENTIAL-MODEL-MARKER" not in path.read_bytes()
    assert sorted(p.name for p in (module / "results").iterdir()) == [
        "fatigue_result.txt",
        "sscurve.csv",
    ]


@pytest.mark.parametrize("program", ["kousoku_fatigue.sh", "kousoku_fatigue.py"])
def test_sample_module_refuses_unknown_arguments(tmp_path: Path, program: str) -> None:
    module = mint_module_dir(tmp_path)
    argv = [str(MODULE / program), "--yield_strength", "in_ys", "--tensile_strength", "in_ts",
            "--reduction_area", "in_ra", "--cpus", "4"]  # fmt: skip
    proc = subprocess.run(argv, cwd=module, capture_output=True, timeout=60)
    assert proc.returncode == 64
    assert not (module / "results").exists()  # nothing ran
