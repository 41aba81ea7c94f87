"""The example alert rules and scrape config in ``examples/monitoring``, checked by the real
``promtool``: syntax, and that each alert fires on the series our processes export (and stays
quiet on healthy ones), with ``promtool test rules``. Every metric a rule names must be one the
broker, the agent or the bridge node actually exports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from bridge.client import node_metrics
from bridge.site.agent_metrics import AgentMetrics
from tests.support.services import unavailable

MONITORING = Path(__file__).resolve().parents[2] / "examples" / "monitoring"
RULES = MONITORING / "mint-bridge-rules.yml"
BROKER_METRICS = Path(__file__).resolve().parents[2] / "broker" / "metrics.py"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool is not installed (Debian package prometheus)")
    return found


def run(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_rules_and_scrape_config_pass_promtool() -> None:
    done = run("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout
    done = run("check", "config", "--syntax-only", "prometheus-mint-bridge.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_named_metric_is_exported() -> None:
    named = set(re.findall(r"\bmint_bridge_\w+", RULES.read_text()))
    agent = generate_latest(AgentMetrics("s", "a", ["c"]).registry).decode()
    exported = set(re.findall(r"^# TYPE (\w+) \w+", agent, re.M))
    exported |= {f"{n}_total" if k == "counter" else n
                 for n, (_, k, _) in node_metrics.FAMILIES.items()}  # fmt: skip
    broker_source = BROKER_METRICS.read_text()
    missing = []
    for name in sorted(named):
        if name.startswith("mint_bridge_broker_"):
            family = name.removeprefix("mint_bridge_broker_").removesuffix("_total")
            if f'"{family}"' not in broker_source:
                missing.append(name)
        elif name not in exported and name.removesuffix("_total") not in exported:
            missing.append(name)
    assert missing == []
    assert "mint_bridge_agent_last_poll_success_timestamp_seconds" in named
    assert "mint_bridge_broker_tls_cert_not_after_timestamp_seconds" in named


# 1 minute steps; series for an agent that stops polling at minute 10, a broker certificate
# that expires at 10 days, a site with jobs queued and no agent, and an agent that is down.
RULE_TESTS = """
rule_files: [RULES]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'mint_bridge_agent_last_poll_success_timestamp_seconds{instance="a:9464"}'
        values: '0+60x10 600x20'
      - series: 'mint_bridge_agent_last_poll_success_timestamp_seconds{instance="b:9464"}'
        values: '0+60x30'
      - series: 'mint_bridge_broker_tls_cert_not_after_timestamp_seconds{instance="br"}'
        values: '864000x120'
      - series: 'mint_bridge_broker_agents_online{site="s1"}'
        values: '0x20'
      - series: 'mint_bridge_broker_queue_depth{site="s1"}'
        values: '3x20'
      - series: 'up{job="mint-bridge-agent", instance="a:9464"}'
        values: '1x3 0x10'
    alert_rule_test:
      - eval_time: 8m
        alertname: MintBridgeAgentNotPolling
        exp_alerts: []
      - eval_time: 17m
        alertname: MintBridgeAgentNotPolling
        exp_alerts:
          - exp_labels: {severity: warning, instance: "a:9464"}
            exp_annotations:
              summary: "agent a:9464 has not reached the broker for over 5 minutes"
      - eval_time: 90m
        alertname: MintBridgeCertificateExpiring
        exp_alerts:
          - exp_labels: {severity: warning, instance: br}
            exp_annotations:
              summary: "the broker's TLS certificate expires in 9d 22h 30m 0s"
      - eval_time: 90m
        alertname: MintBridgeCertificateExpired
        exp_alerts: []
      - eval_time: 3m
        alertname: MintBridgeSiteWithoutAgent
        exp_alerts: []
      - eval_time: 6m
        alertname: MintBridgeSiteWithoutAgent
        exp_alerts:
          - exp_labels: {severity: warning, site: s1}
            exp_annotations:
              summary: "no agent of site s1 is online and jobs are queued"
      - eval_time: 10m
        alertname: MintBridgeAgentDown
        exp_alerts:
          - exp_labels: {severity: warning, job: mint-bridge-agent, instance: "a:9464"}
            exp_annotations:
              summary: "the agent at a:9464 has not answered a scrape for 5 minutes"
"""


def test_alerts_fire_on_the_series_and_only_then(tmp_path: Path) -> None:
    tests = tmp_path / "rules_test.yml"
    tests.write_text(textwrap.dedent(RULE_TESTS).replace("[RULES]", f"['{RULES}']"))
    done = run("test", "rules", str(tests), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("broken", ["expr: time( -", "for: five minutes"])
def test_promtool_refuses_a_broken_rule(tmp_path: Path, broken: str) -> None:
    """The check above can fail: the same file with one rule spoiled is refused."""
    text = RULES.read_text().replace("expr: mint_bridge_broker_oldest_queued_age_seconds > 1800",
                                     broken, 1)  # fmt: skip
    assert text != RULES.read_text()
    bad = tmp_path / "bad.yml"
    bad.write_text(text)
    done = run("check", "rules", str(bad), cwd=tmp_path)
    assert done.returncode != 0
