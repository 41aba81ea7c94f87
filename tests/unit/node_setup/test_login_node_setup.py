"""The ``[scheduler]`` keys ``setup site --login-host`` owns, and the flags it checks."""

from __future__ import annotations

import tomllib

import pytest

from node_setup.errors import MissingValue, SetupError
from node_setup.login_node_setup import (
    LoginSetup,
    _target,
    login_setup,
    render_scheduler_table,
    update_scheduler_table,
)
from node_setup.prompt import Unattended
from node_setup.site_layout import SiteOptions

LOGIN = LoginSetup("mint@login.example", 2222, None, "/cfg/known_hosts_login", "")


def test_a_new_table_holds_the_login_keys() -> None:
    table = tomllib.loads(render_scheduler_table(LOGIN))["scheduler"]
    assert table == {
        "login_host": "mint@login.example",
        "login_port": 2222,
        "login_known_hosts": "/cfg/known_hosts_login",
        "shared_workdir": True,
    }


def test_an_update_changes_only_the_keys_setup_owns() -> None:
    admin = (
        "[site]\nname = 's'\n\n[scheduler]\n# the admin's comment\npoll_interval = 2\n"
        'login_host = "old.example"\nlogin_port = 22\nlogin_identity_file = "/k"\n'
        'login_control_dir = "/run/cm"  # theirs\n'
    )
    text = update_scheduler_table("site.toml", admin, LOGIN)
    assert "# the admin's comment\npoll_interval = 2\n" in text
    assert 'login_control_dir = "/run/cm"  # theirs\n' in text
    table = tomllib.loads(text)["scheduler"]
    assert table["login_host"] == "mint@login.example" and table["login_port"] == 2222
    assert "login_identity_file" not in table  # not given this time: the default applies
    assert table["login_known_hosts"] == "/cfg/known_hosts_login"


def test_a_config_without_a_scheduler_table_gets_one_at_the_end() -> None:
    text = update_scheduler_table("site.toml", "[site]\nname = 's'\n", LOGIN)
    assert text.startswith("[site]\nname = 's'\n")
    assert tomllib.loads(text)["scheduler"]["login_host"] == "mint@login.example"


@pytest.mark.parametrize(
    ("host", "user", "expected"),
    [("login.example", None, "login.example"), ("login.example", "mint", "mint@login.example"),
     ("mint@login.example", None, "mint@login.example")],
)  # fmt: skip
def test_the_target_is_user_at_host(host: str, user: str | None, expected: str) -> None:
    assert _target(host, user) == expected


@pytest.mark.parametrize("host", ["-oProxyCommand=x", "a b", "login;id", "x@y@z"])
def test_a_target_that_is_no_host_is_refused(host: str) -> None:
    with pytest.raises(SetupError, match=r"--login-host .* is not a host name or user@host"):
        _target(host, None)


def test_login_flags_need_a_login_host_and_a_batch_scheduler() -> None:
    quiet = Unattended(echo=False)
    with pytest.raises(SetupError, match="--login-port needs --login-host"):
        login_setup(SiteOptions("s", login_port=2222), "/cfg", quiet)
    with pytest.raises(MissingValue, match="--login-host needs --scheduler slurm"):
        login_setup(SiteOptions("s", login_host="login.example"), "/cfg", quiet)
    assert login_setup(SiteOptions("s"), "/cfg", quiet) is None
