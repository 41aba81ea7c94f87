"""The site config: loading, the errors a bad file gives, and checking a request against it."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest

from bridge.core import defaults
from bridge.core.errors import (
    CommandNotAllowed,
    ConfigError,
    InputRejected,
    JobRejected,
    ParameterInvalid,
)
from bridge.core.job import InputDecl, JobRequest
from bridge.core.results import ReturnRule
from bridge.site.config import (
    DEFAULT_STRING_PATTERN,
    CommandSpec,
    ParamSpec,
    SiteConfig,
    load_site_config,
)

GOOD = """
[site]
name = "test-site"
work_base = "/srv/mint-work"
retention = "2d"
max_input_files = 3
max_input_bytes = "1KiB"

[commands.solve]
description = "Solve it"
program = "bin/solver"
args = ["--n", "{n}", "--job", "{job_id}", "--wd", "{workdir}", "--model",
        "{config_dir}/private/model.inp", "{{literal}}", "--mode", "{mode}", "--flag", "{flag}",
        "--x={x}", "{label}"]
walltime = "1h"
inputs = ["a.dat", "b.dat"]
log_file = "run.log"
returns = ["*.csv", "out/*"]
exclude = ["*.inp"]

[commands.solve.env]
MODEL = "{config_dir}/private"
N = "{n}"
PLAIN = "value"

[commands.solve.params.n]
type = "int"
default = 3
min = 1
max = 10
description = "iterations"

[commands.solve.params.mode]
type = "choice"
choices = ["fast", "slow"]
default = "fast"

[commands.solve.params.flag]
type = "bool"
default = false

[commands.solve.params.x]
type = "float"
min = 0.5
max = 2.5
default = 1.5

[commands.solve.params.label]
type = "string"

[commands.abs]
program = "/usr/bin/true"
"""


def write(tmp_path: Path, text: str, name: str = "site.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    return load_site_config(write(tmp_path, GOOD))


def test_good_config_loads(site: SiteConfig, tmp_path: Path) -> None:
    assert site.name == "test-site"
    assert site.path == str(tmp_path / "site.toml")
    assert site.work_base == "/srv/mint-work"
    assert site.retention == 2 * 86400
    assert site.max_input_files == 3
    assert site.max_input_bytes == 1024
    assert sorted(site.commands) == ["abs", "solve"]

    solve = site.commands["solve"]
    assert solve.program == str(tmp_path / "bin" / "solver")  # relative to the config's dir
    assert solve.config_dir == str(tmp_path)
    assert solve.walltime == 3600
    assert solve.inputs == ("a.dat", "b.dat")
    assert solve.log_file == "run.log"
    assert solve.returns == ReturnRule(("*.csv", "out/*"), ("*.inp",))
    assert solve.scheduler == "local"
    assert solve.description == "Solve it"
    assert solve.params["n"] == ParamSpec(
        "n", "int", default=3, minimum=1.0, maximum=10.0, description="iterations"
    )
    assert solve.params["label"].pattern == DEFAULT_STRING_PATTERN
    assert solve.params["label"].default is None

    absolute = site.commands["abs"]
    assert absolute.program == "/usr/bin/true"
    assert absolute.walltime is None
    assert absolute.returns == ReturnRule(None, ())
    assert absolute.inputs is None
    assert absolute.log_file is None
    assert absolute.args == ()


def test_argv_renders_params_and_builtins_into_single_elements(
    site: SiteConfig, tmp_path: Path
) -> None:
    solve = site.commands["solve"]
    job_id = str(uuid.uuid4())
    values = solve.resolve_params({"label": "steel_A-1", "n": "7", "flag": "yes"})
    assert values == {"n": 7, "mode": "fast", "flag": True, "x": 1.5, "label": "steel_A-1"}
    argv = solve.argv(values, job_id, "/srv/mint-work/" + job_id)
    assert argv == [
        str(tmp_path / "bin" / "solver"),
        "--n", "7",
        "--job", job_id,
        "--wd", "/srv/mint-work/" + job_id,
        "--model", f"{tmp_path}/private/model.inp",
        "{literal}",
        "--mode", "fast",
        "--flag", "true",
        "--x=1.5",
        "steel_A-1",
    ]  # fmt: skip


def test_environment_is_templated(site: SiteConfig, tmp_path: Path) -> None:
    solve = site.commands["solve"]
    values = solve.resolve_params({"label": "a", "n": 2})
    env = solve.environment(values, str(uuid.uuid4()), "/w")
    assert env == {"MODEL": f"{tmp_path}/private", "N": "2", "PLAIN": "value"}


def test_a_hostile_value_stays_one_argument(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [commands.echo]
        program = "/bin/echo"
        args = ["{free}"]
        [commands.echo.params.free]
        pattern = ".*"
        """,
    )
    spec = load_site_config(path).commands["echo"]
    value = "; rm -rf ~ $(id) `id` {job_id}"
    argv = spec.argv(spec.resolve_params({"free": value}), str(uuid.uuid4()), "/w")
    assert argv == ["/bin/echo", value]  # not split, not expanded, not formatted again


def test_describe_lists_names_and_params_but_no_program(site: SiteConfig) -> None:
    described = site.describe()
    by_name = {entry["name"]: entry for entry in described}
    assert by_name["solve"]["description"] == "Solve it"
    assert by_name["solve"]["params"]["n"] == {
        "type": "int",
        "default": 3,
        "description": "iterations",
    }
    assert by_name["solve"]["params"]["label"]["default"] is None
    text = json.dumps(described)
    assert "bin/solver" not in text
    assert "/usr/bin/true" not in text
    assert "private" not in text


def test_defaults_when_site_table_is_missing(tmp_path: Path) -> None:
    site = load_site_config(write(tmp_path, "[commands.a]\nprogram = '/bin/true'\n"))
    assert site.name == "site"
    assert site.work_base == defaults.WORK_BASE
    assert site.retention == defaults.RETENTION_SECONDS
    assert site.max_input_files == defaults.MAX_INPUT_FILES
    assert site.max_input_bytes == defaults.MAX_INPUT_BYTES
    assert site.log_file is None


def test_site_log_file_and_program_expand_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    path = write(
        tmp_path,
        """
        [site]
        log_file = "~/site.log"
        [commands.a]
        program = "~/bin/prog"
        args = ["~/data", "x~/y"]
        """,
    )
    site = load_site_config(path)
    assert site.log_file == "/home/tester/site.log"
    assert site.commands["a"].program == "/home/tester/bin/prog"
    assert site.commands["a"].argv({}, str(uuid.uuid4()), "/w") == [
        "/home/tester/bin/prog",
        "/home/tester/data",
        "x~/y",
    ]


def test_example_configs_load() -> None:
    root = Path(__file__).resolve().parents[4] / "examples"
    site = load_site_config(str(root / "kousoku" / "site.toml"))
    fatigue = site.commands["fatigue"]
    assert fatigue.program == str(root / "kousoku" / "solver.py")
    assert fatigue.returns.wants("model.inp") is False
    assert fatigue.resolve_params({}) == {"cycles": 100000}
    reference = load_site_config(str(root / "site.toml"))  # the commented reference config
    assert {"fatigue", "abaqus"} <= set(reference.commands)
    assert reference.commands["abaqus"].log_file == "remote_program_exec.log"


# --- bad configs -------------------------------------------------------------------------


def load_error(tmp_path: Path, text: str) -> tuple[str, ConfigError]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_site_config(path)
    return path, info.value


COMMAND = """
[commands.x]
program = "/bin/true"
"""


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            COMMAND + "[commands.x.params.n]\ntype = 'integer'\n",
            "commands.x.params.n.type",
            "'integer' is not one of int, float, string, choice, bool",
        ),
        (
            COMMAND + "[commands.x.params.n]\ntype = 'int'\nmaximum = 3\n",
            "commands.x.params.n",
            "unknown key 'maximum'; did you mean 'max'? allowed keys are choices, default, "
            "description, max, "
            "max_length, min, pattern, type",
        ),
        (
            COMMAND + "[commands.x.params.c]\ntype = 'choice'\n",
            "commands.x.params.c.choices",
            "a choice parameter needs a non-empty list of choices",
        ),
        (
            COMMAND + "[commands.x.params.c]\ntype = 'choice'\nchoices = []\n",
            "commands.x.params.c.choices",
            "a choice parameter needs a non-empty list of choices",
        ),
        (
            COMMAND + "[commands.x.params.c]\ntype = 'choice'\nchoices = [1, 2]\n",
            "commands.x.params.c.choices",
            "must be a list of strings",
        ),
        (
            COMMAND + "[commands.x.params.n]\ntype = 'int'\nmin = 1\ndefault = 0\n",
            "commands.x.params.n.default",
            "the default fails its own rules: parameter n='0' is invalid: must be at least 1",
        ),
        (
            COMMAND + "[commands.x.params.n]\ntype = 'int'\ndefault = '3'\nmax = 2\n",
            "commands.x.params.n.default",
            "the default fails its own rules: parameter n='3' is invalid: must be at most 2",
        ),
        (
            COMMAND + "[commands.x.params.s]\ndefault = '-rf'\n",
            "commands.x.params.s.default",
            "the default fails its own rules: parameter s='-rf' is invalid: must match the "
            f"pattern {DEFAULT_STRING_PATTERN}",
        ),
        (
            COMMAND + "[commands.x.params.c]\ntype = 'choice'\nchoices = ['a']\ndefault = 'b'\n",
            "commands.x.params.c.default",
            "the default fails its own rules: parameter c='b' is invalid: must be one of a",
        ),
        (
            COMMAND + "[commands.x.params.b]\ntype = 'bool'\ndefault = 'perhaps'\n",
            "commands.x.params.b.default",
            "the default fails its own rules: parameter b='perhaps' is invalid: "
            "must be true or false",
        ),
        (
            COMMAND + "[commands.x.params.n]\ntype = 'int'\nmin = 10\nmax = 1\n",
            "commands.x.params.n.max",
            "is less than min (10): no value could pass",
        ),
        (
            COMMAND + "[commands.x.params.n]\ntype = 'int'\nmin = 'one'\n",
            "commands.x.params.n.min",
            "must be a float, not str",
        ),
        (
            COMMAND + "[commands.x.params.s]\nmax_length = '5'\n",
            "commands.x.params.s.max_length",
            "must be a int, not str",
        ),
        (
            COMMAND + "[commands.x.params.'bad-name']\ntype = 'int'\n",
            "commands.x.params.bad-name",
            "parameter names are identifiers (letters, digits, '_')",
        ),
        (
            COMMAND + "[commands.x.params]\nn = 5\n",
            "commands.x.params.n",
            "must be a table",
        ),
    ],
)
def test_bad_parameter_config(tmp_path: Path, text: str, key: str, message: str) -> None:
    path, error = load_error(tmp_path, text)
    assert str(error) == f"{path}: {key}: {message}"
    assert error.field == key


def test_bad_pattern_regex(tmp_path: Path) -> None:
    path, error = load_error(tmp_path, COMMAND + "[commands.x.params.s]\npattern = '[a-z'\n")
    assert str(error).startswith(
        f"{path}: commands.x.params.s.pattern: is not a valid regular expression: "
    )
    assert "unterminated character set" in str(error)
    assert error.field == "commands.x.params.s.pattern"


KNOWN = "n, job_id, workdir, config_dir"


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        (
            'args = ["{m}"]',
            "commands.x.args",
            f"'{{m}}' uses {{m}}, which is not a declared parameter (known: {KNOWN}); "
            "use {{ and }} for literal braces",
        ),
        (
            'env = { A = "{home}" }',
            "commands.x.env.A",
            f"'{{home}}' uses {{home}}, which is not a declared parameter (known: {KNOWN}); "
            "use {{ and }} for literal braces",
        ),
        (
            'args = ["{}"]',
            "commands.x.args",
            f"'{{}}' uses {{}}, which is not a declared parameter (known: {KNOWN}); "
            "use {{ and }} for literal braces",
        ),
        (
            'args = ["{n.real}"]',
            "commands.x.args",
            f"'{{n.real}}' uses {{n.real}}, which is not a declared parameter (known: {KNOWN}); "
            "use {{ and }} for literal braces",
        ),
        (
            'args = ["{n:>10}"]',
            "commands.x.args",
            "'{n:>10}': write plain {name} fields only",
        ),
        (
            'args = ["{n!r}"]',
            "commands.x.args",
            "'{n!r}': write plain {name} fields only",
        ),
        (
            'env = { B = "{n:x}" }',
            "commands.x.env.B",
            "'{n:x}': write plain {name} fields only",
        ),
        (
            'args = ["{n"]',
            "commands.x.args",
            "'{n' is not a valid template: expected '}' before end of string",
        ),
        (
            'args = ["}"]',
            "commands.x.args",
            "'}' is not a valid template: Single '}' encountered in format string",
        ),
        (
            'env = { "A=B" = "x" }',
            "commands.x.env.A=B",
            "environment variable names use letters, digits and '_'",
        ),
        (
            'env = { "" = "x" }',
            "commands.x.env",
            "environment variable names use letters, digits and '_'",
        ),
        (
            'env = { "1X" = "x" }',
            "commands.x.env.1X",
            "environment variable names use letters, digits and '_'",
        ),
        ('args = "--n {n}"', "commands.x.args", "must be a list of strings"),
        ("args = [1]", "commands.x.args", "must be a list of strings"),
        ("env = { A = 1 }", "commands.x.env.A", "must be a str, not int"),
    ],
)
def test_bad_templates(tmp_path: Path, extra: str, key: str, message: str) -> None:
    text = f"[commands.x]\nprogram = '/bin/true'\n{extra}\n[commands.x.params.n]\ntype = 'int'\n"
    path, error = load_error(tmp_path, text)
    assert str(error) == f"{path}: {key}: {message}"
    assert error.field == key


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        (
            "returns = 'all'",
            "commands.x.returns",
            'must be "workdir" or a non-empty list of glob patterns',
        ),
        (
            "returns = []",
            "commands.x.returns",
            'must be "workdir" or a non-empty list of glob patterns',
        ),
        (
            "returns = ['']",
            "commands.x.returns",
            'must be "workdir" or a non-empty list of glob patterns',
        ),
        (
            "returns = 5",
            "commands.x.returns",
            'must be "workdir" or a non-empty list of glob patterns',
        ),
        ("exclude = '*.inp'", "commands.x.exclude", "must be a list of strings"),
        (
            "log_file = '../run.log'",
            "commands.x.log_file",
            "log_file '../run.log' is not allowed: it contains a path separator; "
            "send a plain file name",
        ),
        (
            "log_file = '.mint-bridge'",
            "commands.x.log_file",
            "log_file '.mint-bridge' is not allowed: the name is reserved by mint-bridge",
        ),
        ("log_file = ''", "commands.x.log_file", "log_file must be a non-empty string"),
        (
            "inputs = ['ok.dat', '/etc/passwd']",
            "commands.x.inputs",
            "input name '/etc/passwd' is not allowed: it contains a path separator; "
            "send a plain file name",
        ),
        (
            "inputs = ['-x']",
            "commands.x.inputs",
            "input name '-x' is not allowed: it starts with '-', which a program could read "
            "as an option",
        ),
        ("inputs = 'a.dat'", "commands.x.inputs", "must be a list of strings"),
        (
            "walltime = 'soon'",
            "commands.x.walltime",
            "'soon' is not a duration; use seconds or a number with s/m/h/d/w, e.g. '30m'",
        ),
        ("walltime = -5", "commands.x.walltime", "a duration cannot be negative"),
        ("description = 5", "commands.x.description", "must be a str, not int"),
        ("scheduler = 'cron'", "commands.x.scheduler", "must be one of local"),
    ],
)
def test_bad_command_values(tmp_path: Path, extra: str, key: str, message: str) -> None:
    path, error = load_error(tmp_path, COMMAND + extra + "\n")
    if key.endswith(".scheduler"):  # the list of schedulers grows with the adapters
        assert str(error).startswith(f"{path}: {key}: {message}")
    else:
        assert str(error) == f"{path}: {key}: {message}"
    assert error.field == key


def test_missing_program(tmp_path: Path) -> None:
    path, error = load_error(tmp_path, "[commands.x]\nargs = []\n")
    assert str(error) == f"{path}: commands.x.program: is required"


def test_unknown_command_key_names_the_allowed_keys(tmp_path: Path) -> None:
    path, error = load_error(tmp_path, COMMAND + "prog = 'x'\n")
    prefix = f"{path}: commands.x: unknown key 'prog'; did you mean 'program'? allowed keys are "
    assert str(error).startswith(prefix)
    allowed = str(error)[len(prefix) :].split(", ")
    assert allowed == sorted(allowed)
    for key in ("args", "env", "exclude", "inputs", "log_file", "params", "program", "returns"):
        assert key in allowed
    assert error.field == "commands.x"


def test_unknown_top_level_and_site_keys(tmp_path: Path) -> None:
    path, error = load_error(tmp_path, "[sites]\n")
    assert str(error).startswith(
        f"{path}: top level: unknown key 'sites'; did you mean 'site'? allowed keys are "
    )
    assert "commands" in str(error) and "site" in str(error)
    assert error.field == "top level"

    path, error = load_error(tmp_path, "[site]\nwork_dir = '/tmp'\n")
    assert str(error) == (
        f"{path}: site: unknown key 'work_dir'; allowed keys are allow_probe, audit_dir, "
        "idle_timeout, legacy_commands, log_file, max_input_bytes, max_input_files, name, "
        "release_group, retention, work_base"
    )


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("[site]\nwork_base = 'tmp'\n", "site.work_base", "must be an absolute path, e.g. /tmp"),
        (
            "[site]\nretention = 'a week'\n",
            "site.retention",
            "'a week' is not a duration; use seconds or a number with s/m/h/d/w, e.g. '30m'",
        ),
        ("[site]\nretention = -1\n", "site.retention", "a duration cannot be negative"),
        (
            "[site]\nmax_input_bytes = 'lots'\n",
            "site.max_input_bytes",
            "'lots' is not a size; use bytes or e.g. '512MiB', '10GB'",
        ),
        ("[site]\nmax_input_bytes = -1\n", "site.max_input_bytes", "a size cannot be negative"),
        ("[site]\nmax_input_files = '10'\n", "site.max_input_files", "must be a int, not str"),
        ("[site]\nmax_input_files = true\n", "site.max_input_files", "must be a int, not bool"),
        ("[site]\nname = 5\n", "site.name", "must be a str, not int"),
        ("site = 5\n", "site", "must be a table"),
        ("commands = []\n", "commands", "must be a table"),
        ("[commands]\nx = 'prog'\n", "commands.x", "must be a table"),
    ],
)
def test_bad_site_values(tmp_path: Path, text: str, key: str, message: str) -> None:
    path, error = load_error(tmp_path, text)
    assert str(error) == f"{path}: {key}: {message}"
    assert error.field == key


@pytest.mark.parametrize("name", ["bad name", "-x", "a/b", "", "x" * 65, "a;b", "ok\n"])
def test_invalid_command_names(tmp_path: Path, name: str) -> None:
    quoted = json.dumps(name)  # a TOML basic string has JSON's escapes
    path, error = load_error(tmp_path, f"[commands.{quoted}]\nprogram = '/bin/true'\n")
    where = f"commands.{name}" if name else "commands"
    assert str(error) == (
        f"{path}: {where}: command names use letters, digits, '_', '.', '-' (max 64)"
    )


@pytest.mark.parametrize("name", ["a", "solve-2", "x.y_z", "9", "A" * 64])
def test_valid_command_names(tmp_path: Path, name: str) -> None:
    site = load_site_config(write(tmp_path, f"[commands.'{name}']\nprogram = '/bin/true'\n"))
    assert list(site.commands) == [name]


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load_site_config(missing)
    assert str(info.value) == f"config file {missing} does not exist; create it or pass --config"

    bad = write(tmp_path, "[site\nname = 1\n")
    with pytest.raises(ConfigError) as info:
        load_site_config(bad)
    assert str(info.value).startswith(f"{bad} is not valid TOML: ")

    directory = tmp_path / "dir.toml"
    directory.mkdir()
    with pytest.raises(ConfigError) as info:
        load_site_config(str(directory))
    assert str(info.value) == f"cannot read config file {directory}: Is a directory"


# --- parameter values ----------------------------------------------------------------------


def param(kind: str, **kwargs: object) -> ParamSpec:
    return ParamSpec("p", kind, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "value"),
    [("42", 42), ("+3", 3), ("-2", -2), (" 7 ", 7), ("0", 0), (12, 12), ("007", 7)],
)
def test_int_conversion(raw: object, value: int) -> None:
    result = param("int").validate(raw)
    assert result == value
    assert type(result) is int


@pytest.mark.parametrize(
    "raw", ["4.5", "1e3", "", "abc", "0x10", "1_000", True, 2.0, None, "1" * 19]
)
def test_int_rejects(raw: object) -> None:
    with pytest.raises(ParameterInvalid) as info:
        param("int").validate(raw)
    assert str(info.value) == f"parameter p={str(raw)[:80]!r} is invalid: must be an integer"
    assert info.value.field == "p"


@pytest.mark.parametrize(
    ("raw", "value"), [("2.5", 2.5), ("1e3", 1000.0), ("-0.5", -0.5), ("3", 3.0), (3, 3.0)]
)
def test_float_conversion(raw: object, value: float) -> None:
    result = param("float").validate(raw)
    assert result == value
    assert type(result) is float


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("abc", "must be a number"),
        ("", "must be a number"),
        (True, "must be a number"),
        (None, "must be a number"),
        ("nan", "must be a finite number"),
        ("inf", "must be a finite number"),
        ("-Infinity", "must be a finite number"),
        ("1e400", "must be a finite number"),
        (10**400, "must be a finite number"),
    ],
)
def test_float_rejects(raw: object, rule: str) -> None:
    with pytest.raises(ParameterInvalid) as info:
        param("float").validate(raw)
    assert str(info.value) == f"parameter p={str(raw)[:80]!r} is invalid: {rule}"


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("True", True), ("1", True), ("yes", True), ("false", False),
     ("FALSE", False), ("0", False), ("no", False), (True, True), (False, False)],
)  # fmt: skip
def test_bool_conversion(raw: object, value: bool) -> None:
    assert param("bool").validate(raw) is value


@pytest.mark.parametrize("raw", ["maybe", "", "on", 1, 0, None])
def test_bool_rejects(raw: object) -> None:
    with pytest.raises(ParameterInvalid) as info:
        param("bool").validate(raw)
    assert str(info.value) == f"parameter p={str(raw)!r} is invalid: must be true or false"


def test_choice() -> None:
    spec = param("choice", choices=("fast", "slow"))
    assert spec.validate("slow") == "slow"
    for raw in ("FAST", "fast ", "", 1):
        with pytest.raises(ParameterInvalid) as info:
            spec.validate(raw)
        rule = "must be a string" if raw == 1 else "must be one of fast, slow"
        assert str(info.value) == f"parameter p={str(raw)!r} is invalid: {rule}"


@pytest.mark.parametrize(
    "raw", ["steel_A-1.5", "x=1", "user@host", "a:b,c", "50%", "v+1", "A", "0"]
)
def test_default_string_pattern_accepts_word_like_values(raw: str) -> None:
    assert param("string").validate(raw) == raw


@pytest.mark.parametrize(
    "raw",
    ["; rm -rf ~", "-rf", "--help", "a b", "../x", "a/b", "", "$(id)", "`id`", "a\nb", "a'b",
     'a"b', "a|b", "a&b", "~", "*", "x\\y", "a>b", ".hidden", "é"],
)  # fmt: skip
def test_default_string_pattern_rejects_shell_and_option_syntax(raw: str) -> None:
    with pytest.raises(ParameterInvalid) as info:
        param("string").validate(raw)
    assert str(info.value) == (
        f"parameter p={raw!r} is invalid: must match the pattern {DEFAULT_STRING_PATTERN}"
    )


def test_string_max_length_and_custom_pattern() -> None:
    spec = param("string", max_length=5)
    assert spec.validate("abcde") == "abcde"
    with pytest.raises(ParameterInvalid) as info:
        spec.validate("abcdef")
    assert str(info.value) == "parameter p='abcdef' is invalid: must be at most 5 characters"
    custom = param("string", pattern="[a-z]+")
    assert custom.validate("abc") == "abc"
    with pytest.raises(ParameterInvalid, match="must match the pattern"):
        custom.validate("abc1")  # a full match, not a prefix match
    with pytest.raises(ParameterInvalid) as info:
        param("string").validate(5)
    assert str(info.value) == "parameter p='5' is invalid: must be a string"


@pytest.mark.parametrize(
    ("kind", "raw", "message"),
    [
        ("int", "0", "parameter p='0' is invalid: must be at least 1"),
        ("int", "11", "parameter p='11' is invalid: must be at most 10"),
        ("float", "0.99", "parameter p='0.99' is invalid: must be at least 1"),
        ("float", "10.01", "parameter p='10.01' is invalid: must be at most 10"),
    ],
)
def test_min_max(kind: str, raw: str, message: str) -> None:
    spec = param(kind, minimum=1.0, maximum=10.0)
    assert spec.validate("1") == 1 and spec.validate("10") == 10  # bounds are inclusive
    with pytest.raises(ParameterInvalid) as info:
        spec.validate(raw)
    assert str(info.value) == message


def test_fractional_bounds_are_shown_as_written() -> None:
    spec = param("float", minimum=0.5, maximum=2.5)
    with pytest.raises(ParameterInvalid) as info:
        spec.validate("0.25")
    assert str(info.value) == "parameter p='0.25' is invalid: must be at least 0.5"
    with pytest.raises(ParameterInvalid) as info:
        spec.validate("3")
    assert str(info.value) == "parameter p='3' is invalid: must be at most 2.5"


def test_long_values_are_cut_in_messages() -> None:
    with pytest.raises(ParameterInvalid) as info:
        param("int").validate("x" * 500)
    assert str(info.value) == f"parameter p={'x' * 80!r} is invalid: must be an integer"


# --- requests ------------------------------------------------------------------------------


def request(command: str = "solve", params: dict[str, object] | None = None,
            inputs: tuple[InputDecl, ...] = ()) -> JobRequest:  # fmt: skip
    return JobRequest(str(uuid.uuid4()), command, params or {}, inputs)  # type: ignore[arg-type]


AB = (InputDecl("a.dat", 10), InputDecl("b.dat", 20))


def test_check_request_accepts_a_good_request(site: SiteConfig) -> None:
    spec, values = site.check_request(request(params={"label": "run1", "x": "2"}, inputs=AB))
    assert spec is site.commands["solve"]
    assert values == {"n": 3, "mode": "fast", "flag": False, "x": 2.0, "label": "run1"}


def test_required_parameter_missing(site: SiteConfig) -> None:
    with pytest.raises(ParameterInvalid) as info:
        site.check_request(request(inputs=AB))
    assert str(info.value) == "parameter label is required by command solve; pass -p label=VALUE"
    assert info.value.field == "label"


def test_unknown_parameter_is_named(site: SiteConfig) -> None:
    with pytest.raises(ParameterInvalid) as info:
        site.check_request(request(params={"label": "a", "cmd": "rm"}, inputs=AB))
    assert str(info.value) == (
        "command solve has no parameter 'cmd'; allowed: flag, label, mode, n, x"
    )
    assert info.value.field == "cmd"
    with pytest.raises(ParameterInvalid) as info:
        site.check_request(request("abs", params={"y": "1"}))
    assert str(info.value) == "command abs has no parameter 'y'; allowed: none"


def test_invalid_parameter_value_in_request(site: SiteConfig) -> None:
    with pytest.raises(ParameterInvalid) as info:
        site.check_request(request(params={"label": "; rm -rf ~"}, inputs=AB))
    assert str(info.value).startswith("parameter label='; rm -rf ~' is invalid: must match")
    with pytest.raises(ParameterInvalid) as info:
        site.check_request(request(params={"label": "a", "n": "11"}, inputs=AB))
    assert str(info.value) == "parameter n='11' is invalid: must be at most 10"


def test_unknown_command(site: SiteConfig) -> None:
    with pytest.raises(CommandNotAllowed) as info:
        site.check_request(request("sh"))
    assert str(info.value) == "site test-site has no command 'sh'; it offers: abs, solve"
    assert info.value.field == "command"
    assert isinstance(info.value, JobRejected)


def test_inputs_exactly_as_declared(site: SiteConfig) -> None:
    with pytest.raises(InputRejected) as info:
        site.check_request(request(params={"label": "a"}, inputs=AB[:1]))
    assert str(info.value) == "command solve needs input 'b.dat'; send it with -i"
    assert info.value.field == "inputs"
    extra = (*AB, InputDecl("c.dat", 1))
    with pytest.raises(InputRejected) as info:
        site.check_request(request(params={"label": "a"}, inputs=extra))
    assert str(info.value) == "command solve does not accept input 'c.dat'; it accepts a.dat, b.dat"


def test_input_count_and_size_limits(site: SiteConfig) -> None:
    three = tuple(InputDecl(f"f{i}", 100) for i in range(3))
    site.check_request(request("abs", inputs=three))  # at the limit: accepted
    with pytest.raises(InputRejected) as info:
        site.check_request(request("abs", inputs=(*three, InputDecl("f3", 0))))
    assert str(info.value) == "4 inputs exceed the site's limit of 3"
    assert info.value.field == "inputs"
    site.check_request(request("abs", inputs=(InputDecl("big", 1024),)))
    with pytest.raises(InputRejected) as info:
        site.check_request(request("abs", inputs=(InputDecl("a", 1000), InputDecl("b", 25))))
    assert str(info.value) == "inputs total 1025 bytes, over the site's limit of 1024"


def test_command_spec_without_inputs_rule_accepts_any_names() -> None:
    spec = CommandSpec("c", "/bin/true")
    spec.check_inputs(["anything", "else"])
    assert spec.resolve_params({}) == {}


def test_config_file_mode_is_irrelevant_but_path_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, COMMAND)
    os.chmod(path, 0o400)
    assert load_site_config(path).path == path


def test_an_original_command_string_maps_to_a_command_of_the_site(tmp_path: Path) -> None:
    path = write(tmp_path, """
[site]
legacy_commands = {"/opt/Abaqus/Commands/abaqus" = "abaqus"}
[commands.abaqus]
program = "/bin/true"
""")
    site = load_site_config(path)
    assert site.command_for("/opt/Abaqus/Commands/abaqus") == "abaqus"
    assert site.command_for("abaqus") == "abaqus"
    assert site.command_for("/opt/other") == "/opt/other"  # refused later, by its name
    # What its agent claims: the names and original command strings, never a program path.
    assert site.offered_commands() == ["/opt/Abaqus/Commands/abaqus", "abaqus",
                                       "mint-bridge-probe"]  # fmt: skip


def test_a_site_without_the_probe_offers_only_its_commands(tmp_path: Path) -> None:
    path = write(tmp_path, """
[site]
allow_probe = false
[commands.solve]
program = "/bin/true"
""")
    assert load_site_config(path).offered_commands() == ["solve"]


def test_a_mapping_to_a_command_the_site_lacks_names_the_fix(tmp_path: Path) -> None:
    path, error = load_error(tmp_path, """
[site]
legacy_commands = {"/opt/Abaqus/Commands/abaqus" = "abaqs"}
[commands.abaqus]
program = "/bin/true"
""")
    assert str(error) == (
        f"{path}: site.legacy_commands: '/opt/Abaqus/Commands/abaqus' maps to 'abaqs', which "
        "is not a command here; define [commands.abaqs] or map it to one of: abaqus"
    )
