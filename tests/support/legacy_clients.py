"""Replays of the original API's two clients, request for request, for the legacy API tests.

``Workflow`` sends what the original ``mi-system-wf.py URL SITE TOKEN COMMAND in:.. out:..
[PARAMS]`` sends and reads what it reads; ``Poller`` does the same for the original site
poller ``mi-system-remote.py SITE URL TOKEN``. The specification is the description of the
original clients (headers on every request, GETs with ``Content-Type: application/json``,
get-calc-result as a GET with a JSON body, ids in the query, only ``errors[0]`` read, only the
integer 200 OK, ``status:`` messages split on ':', the poller's quirks). What they do not
replay: their fixed sleeps (the test decides when each step happens) and the URL's fixed port
(the clients append :50443; the test broker listens on a free port).

The original poller hands ``command`` to a shell; here the whitelisted command is a program
path and is run as one (argv, no shell), which is what a shell does with a plain path.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

STDOUT_NAME = "計算標準出力.txt"
STDERR_NAME = "計算標準エラー出力.txt"


class ClientDied(Exception):
    """Where the original client would have crashed (a traceback) or called sys.exit(1)."""


def file_types(path: Path) -> tuple[str, str]:
    """``file -i -b`` split in two, as both clients do: ('text/plain;', 'charset=us-ascii')."""
    if shutil.which("file"):
        out = subprocess.run(["file", "-i", "-b", str(path)], capture_output=True, check=True)
        words = out.stdout.decode().split("\n")[0].split()
        return words[0], words[1]
    data = path.read_bytes()
    if not data:
        return "inode/x-empty;", "charset=binary"
    try:
        data.decode("ascii")
        return "text/plain;", "charset=us-ascii"
    except UnicodeDecodeError:
        return "application/octet-stream;", "charset=binary"


def _session(token: str, ca: Path, *, poller: bool) -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # else $REQUESTS_CA_BUNDLE would replace the test CA
    http.verify = str(ca)
    http.headers["Authorization"] = f"Bearer {token}"
    http.headers["Content-Type"] = "application/json"
    if poller:
        http.headers["Accept"] = "application/json"
    return http


# --- the workflow side -------------------------------------------------------------------------


@dataclass
class Workflow:
    """``mi-system-wf.py``: register, allow, poll status and progress, fetch results."""

    url: str  # https://127.0.0.1:<port>, where the original takes argv[1] + ":50443"
    site: str
    token: str
    command: str
    inputs: list[str]  # as typed: paths relative to cwd
    outputs: list[str]
    ca: Path
    cwd: Path
    parameters: str = ""
    types: dict[str, tuple[str, str]] = field(default_factory=dict)  # input -> forced types
    accept_id: str | None = None
    abnormal: bool = False
    printed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = _session(self.token, self.ca, poller=False)
        self.base = f"{self.url}/mi-distcomp-api"

    def calc_info(self) -> dict[str, Any]:
        files: dict[str, list[str]] = {}
        for name in self.inputs:
            path = self.cwd / name
            if path.exists():
                mimetype, charset = self.types.get(name) or file_types(path)
                files[name] = [base64.b64encode(path.read_bytes()).decode(), mimetype, charset]
            else:
                files[name] = ["", "", ""]  # a missing input is still sent
        empty = {"content": "", "mimetype1": "", "mimetype2": ""}
        results = {name: dict(empty) for name in self.outputs}
        results[STDOUT_NAME] = dict(empty)
        results[STDERR_NAME] = dict(empty)
        return {"calc-info": {"command": self.command, "remote-site": self.site,
                              "parameters": self.parameters, "parameter_files": files,
                              "result_files": results}}  # fmt: skip

    def add(self) -> requests.Response:
        answer = self.http.post(f"{self.base}/add-calcinfo", json=self.calc_info())
        if answer.status_code in (200, 201):
            self.accept_id = answer.json()["errors"][0]["accept_id"]  # KeyError: a crash
        else:
            self.printed.append(answer.text)
        return answer

    def allow(self) -> bool:
        answer = self.http.post(f"{self.base}/allow-wait-calc", json={"accept_id": self.accept_id})
        if answer.status_code not in (200, 201):
            self.printed.append(answer.text)
            return False
        return bool(answer.json()["errors"][0]["code"] == 200)

    def _message(self, endpoint: str) -> str:
        answer = self.http.get(f"{self.base}/{endpoint}?accept_id={self.accept_id}")
        if answer.status_code not in (200, 201):
            text = answer.text  # split as raw text; harmless, the loop goes on
        else:
            text = answer.json()["errors"][0]["message"]
        parts = text.split(":")
        if len(parts) < 2:
            raise ClientDied(f"IndexError splitting {text!r}")
        return parts[1]

    def poll(self) -> tuple[str, str]:
        """One round of the wait loop: (status, progress)."""
        status = self._message("calc-status")
        if status == "abnormal":
            self.abnormal = True
        return status, self._message("calc-progress")

    def get_result(self) -> bool:
        answer = self.http.get(f"{self.base}/get-calc-result?accept_id={self.accept_id}",
                               json={"accept_id": self.accept_id})  # fmt: skip
        if answer.status_code not in (200, 201):
            self.printed.append(answer.text)
            return False
        first = answer.json()["errors"][0]
        if first["code"] != 200:
            self.printed.append(first["message"])
            return False
        for name, entry in first.get("result-info", {}).get("result_files", {}).items():
            content, mimetype1, mimetype2 = entry["content"], entry["mimetype1"], entry["mimetype2"]
            if mimetype1 == "Error":
                self.printed.append(mimetype2)
            elif mimetype2 in ("charset=utf-8;", "charset=us-ascii;"):
                (self.cwd / name).write_text(base64.b64decode(content).decode("utf-8"))
            else:
                (self.cwd / name).write_bytes(base64.b64decode(content.encode()))
        return True

    def cancel(self) -> requests.Response:
        """What the client's destructor sends when it exits holding an id without success."""
        return self.http.post(f"{self.base}/cancel-wait-calc",
                              json={"accept_id": self.accept_id, "delete": "force"})  # fmt: skip

    def finish(self, rounds: Iterator[None] | None = None) -> int:
        """The wait loop until 'got return', then the results: the client's exit code."""
        while True:
            _, progress = self.poll()
            if progress == "got return":
                break
            if rounds is not None:
                next(rounds)  # the test's pause between rounds (the original sleeps 10 s)
        if not self.get_result():
            self.cancel()
            return 1
        self.accept_id = None
        return 1 if self.abnormal else 0


# --- the site side ------------------------------------------------------------------------------


@dataclass
class Poller:
    """``mi-system-remote.py``: ask for a job, take it, run it, send the results."""

    url: str
    site: str
    token: str
    ca: Path
    calc_base: Path
    request_status: bool | None = None
    accept_id: str | None = None
    calc_info: dict[str, Any] | None = None
    command_result: int | None = None
    printed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = _session(self.token, self.ca, poller=True)
        self.base = f"{self.url}/mi-distcomp-api"

    def _body(self, **extra: Any) -> dict[str, Any]:
        return {"accept_id": self.accept_id, "site_id": self.site, **extra}

    def calc_request(self) -> bool:
        answer = self.http.get(f"{self.base}/calc-request?site_id={self.site}")
        if answer.status_code >= 400:
            self.printed.append(f"status code = {answer.status_code} / {answer.text}")
            self.accept_id = None
            return False
        if self.request_status is not False:
            # The first request after start and after each job is only printed.
            self.printed.append(answer.text)
            return False
        items = answer.json()
        if "errors" in items and items["errors"][0]["code"] == 200:
            self.accept_id = items["errors"][0]["accept_id"]
        return self.accept_id is not None

    def cycle(self) -> Iterator[str]:
        """One turn of the main loop; yields the name of each step once it is done."""
        if self.calc_request():
            yield "calc-request"
            yield from self.job()
            self.request_status = None
        else:
            self.request_status = False

    def run_cycle(self) -> list[str]:
        return list(self.cycle())

    def _post(self, endpoint: str, **extra: Any) -> dict[str, Any]:
        answer = self.http.post(f"{self.base}/{endpoint}", json=self._body(**extra))
        parsed: dict[str, Any] = answer.json()  # a non-JSON reply kills the poller
        return parsed

    def _printed(self, reply: dict[str, Any]) -> int | str:
        first = reply["errors"][0]  # KeyError here kills the poller
        self.printed.append(f"code = {first['code']} / message = {first['message']}")
        code: int | str = first["code"]
        return code

    def calc_params(self) -> bool:
        answer = self.http.get(
            f"{self.base}/calc-params?accept_id={self.accept_id}&site_id={self.site}")
        reply = answer.json()
        if "errors" in reply and reply["errors"][0]["code"] != 200:
            self.printed.append(str(reply["errors"][0]))
            self.accept_id = None
            return False
        self.calc_info = reply
        return True

    def job(self) -> Iterator[str]:
        if not self.calc_params():
            self.accept_id = None
            return
        yield "calc-params"
        yield from self.after_params()

    def after_params(self) -> Iterator[str]:
        """The job's steps once calc-params gave it to this poller."""
        if self._printed(self._post("calc-params-complete")) != 200:
            self.accept_id = None
            return
        yield "calc-params-complete"
        if not self.calc_start():
            yield "calc-start"
            # The failure path: whatever can be sent is sent, then the poller goes idle.
            self.calc_end()
            yield "calc-end"
            self.send_results()
            yield "send-results"
            self.end_send()
            yield "end-send"
            self.accept_id = None
            return
        yield "calc-start"
        if not self.calc_end():
            self.accept_id = None
            return
        yield "calc-end"
        if not self.send_results():
            self.end_send()
            self.accept_id = None
            return
        yield "send-results"
        self.end_send()
        yield "end-send"
        self.accept_id = None

    def calc_start(self) -> bool:
        if self._printed(self._post("calc-start")) != 200:
            # calc-end then goes out with a null id, and send-results dies (see there).
            self.accept_id = None
            self.command_result = 1
            return False
        assert self.calc_info is not None
        info = self.calc_info["calc-info"]
        workdir = self.calc_base / str(self.accept_id)
        workdir.mkdir()  # plain mkdir: an existing dir kills the poller
        for key in info["parameter_files"]:
            name = key.split("/")[-1]
            content, _, charset = info["parameter_files"][name]  # KeyError for a key with '/'
            if charset in ("charset=utf-8", "charset=us-ascii"):
                (workdir / name).write_text(base64.b64decode(content).decode("utf-8"))
            else:
                (workdir / name).write_bytes(base64.b64decode(content.encode()))
        env = dict(os.environ, CALC_DIR=str(workdir))
        done = subprocess.run([info["command"]], cwd=workdir, env=env, capture_output=True,
                              check=False)  # fmt: skip
        stdout, stderr = done.stdout.decode("utf-8"), done.stderr.decode("utf-8")
        (workdir / STDOUT_NAME).write_text("".join(f"{line}\n" for line in stdout.split("\n"))
                                           + "\n")  # fmt: skip
        (workdir / STDERR_NAME).write_text("".join(f"{line}\n" for line in stderr.split("\n"))
                                           + "\n")  # fmt: skip
        returned = any(
            (workdir / name).exists() for name in info["result_files"]
            if name not in (STDOUT_NAME, STDERR_NAME)
        )  # fmt: skip
        result = done.returncode if returned else 1
        self.command_result = 1 if result != 0 else 0
        return result == 0

    def calc_end(self) -> bool:
        result = "abnormal" if self.command_result != 0 else "calc end"
        reply = self._post("calc-end", result=result)
        if "errors" in reply and self._printed(reply) != 200:
            self.accept_id = None
            return False
        return True

    def send_results(self) -> bool:
        assert self.calc_info is not None
        workdir = self.calc_base / str(self.accept_id)
        if not workdir.is_dir():
            raise ClientDied(f"os.chdir({workdir}) failed")
        files: dict[str, Any] = {}
        for name, entry in self.calc_info["calc-info"]["result_files"].items():
            files[name] = entry  # the object from calc-params, filled in
            path = workdir / name
            if not name or not path.exists():
                entry["mimetype1"] = "Error"
                entry["mimetype2"] = f"出力指定ファイル({name})がありませんでした。"
            else:
                entry["mimetype1"], entry["mimetype2"] = file_types(path)
                entry["content"] = base64.b64encode(path.read_bytes()).decode("utf-8")
        answer = self.http.post(f"{self.base}/send-results", json=self._body(result_files=files))
        if answer.status_code >= 500 or answer.status_code in (400, 401):
            self.printed.append(f"status code = {answer.status_code} / {answer.text}")
            return False
        try:
            reply = answer.json()
            if "errors" in reply:
                return self._printed(reply) == 200
        except ValueError:
            return False
        return True

    def end_send(self) -> None:
        reply = self._post("end-send", result="end send")
        if "errors" in reply:
            self._printed(reply)
