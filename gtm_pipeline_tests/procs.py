"""Real servers in end-to-end tests: free ports, process groups that are always stopped, and waiting for the Dagster
webserver to load the code location.

Every server is started in its own session (= its own process group) so that stopping it also stops what it spawned
(`dagster dev` starts a webserver, a daemon and a code server; the daemon starts run workers).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"


def venv_tool(name: str) -> str:
    """A console script of the project's venv (falls back to the one next to the running interpreter)."""
    import sys

    for cand in (Path(sys.executable).parent / name, VENV_BIN / name):
        if cand.exists():
            return str(cand)
    return name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    # pytest or a CI runner may ignore SIGINT; an ignored disposition survives exec, and `dagster dev` shuts its
    # children down cleanly only on SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_group(cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new process group, stdout+stderr to ``log``."""
    fh = open(log, "ab")  # noqa: SIM115 - closed when the process is stopped
    proc = subprocess.Popen(cmd, env=env, cwd=str(cwd), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_default_sigint)
    proc._log_handle = fh  # type: ignore[attr-defined]
    return proc


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(proc: subprocess.Popen, *, grace: float = 30.0) -> None:
    """SIGINT to the whole group, wait; then SIGTERM, then SIGKILL whatever lingers in the group."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if not _group_alive(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(pgid):
            if proc.poll() is None:
                try:
                    proc.wait(timeout=0.2)  # reaps the leader, so a zombie leader does not keep the group "alive"
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)
    if proc.poll() is None:
        proc.wait(timeout=5)
    fh = getattr(proc, "_log_handle", None)
    if fh:
        fh.close()


def log_tail(log: Path, n: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def graphql(port: int, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out = json.loads(resp.read())
    if out.get("errors"):
        raise AssertionError(f"GraphQL errors: {out['errors']}")
    return out["data"]


WORKSPACE_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def wait_for_webserver(port: int, proc: subprocess.Popen, log: Path, *, budget: float = 90.0) -> list[str]:
    """Wait until ``/server_info`` answers and every code location is LOADED; returns the location names.

    ``budget`` only bounds how long a broken start can hang the suite; nothing asserts on the time taken.
    """
    deadline = time.monotonic() + budget
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before it was ready:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as r:
                r.read()
            data = graphql(port, WORKSPACE_QUERY)["workspaceOrError"]
            entries = data.get("locationEntries") or []
            errors = [e for e in entries if (e.get("locationOrLoadError") or {}).get("__typename") == "PythonError"]
            if errors:
                raise AssertionError(f"code location failed to load: {errors[0]['locationOrLoadError']['message']}")
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return [e["name"] for e in entries]
            last = f"locations: {[(e['name'], e['loadStatus']) for e in entries]}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as e:
            last = repr(e)
        time.sleep(0.5)
    raise AssertionError(f"webserver on port {port} not ready ({last}):\n{log_tail(log)}")


def run_checked(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 300.0) -> str:
    """Run a command to completion; fail with its output when it exits non-zero."""
    res = subprocess.run(cmd, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res.stdout
