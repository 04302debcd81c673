"""The README a newcomer can follow: it starts with the two set-up commands, and every command shown in README.md
and docs/*.md exists — `gtm-pipeline` and `dagster*` sub-commands and options resolve in their click trees, `make`
targets are in the Makefile, `python -m` modules import, and any other program is a known tool."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import click
import pytest
from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
# Programs the docs may show that are not ours: shell built-ins, coreutils, and the external tools the operations
# guide wires up. Anything else must be a console script of this project's venv.
KNOWN_PROGRAMS = {
    "cd", "export", "source", "echo", "cat", "cp", "mv", "rm", "mkdir", "ls", "tail", "head", "grep", "chown", "env",
    "kill", "ss", "lsof", "curl", "git", "bash", "sh", "sudo", "apt-get", "runuser", "su", "pip", "python3", "python",
    "psql", "createdb", "createuser", "pg_ctl", "initdb", "pg_ctlcluster", "duckdb", "chromium", "pyinstrument",
    "prometheus", "promtool", "prometheus-alertmanager", "amtool", "docker", "kubectl", "helm", "celery", "systemctl",
    "xdg-open", "open", "sqlite3", "unset", "pytest", "watch", "du", "find",
}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1).strip().lower(), m.group(2))
            for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```", text, flags=re.M | re.S)]


def shell_commands(body: str) -> list[list[str]]:
    """The commands of a shell block: continuations joined, comments and prompts dropped, split on && ; |."""
    joined = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as e:
            raise AssertionError(f"cannot parse shell line {line!r}: {e}") from e
        cmd: list[str] = []
        for tok in tokens + [";"]:
            if tok in ("&&", "||", ";", "|", "&"):
                if cmd:
                    out.append(cmd)
                cmd = []
            elif not cmd and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tok):
                continue  # VAR=value prefix
            else:
                cmd.append(tok)
    return out


def all_commands() -> list[tuple[str, list[str]]]:
    cmds = []
    for doc in DOCS:
        for lang, body in fenced_blocks(doc.read_text(encoding="utf-8")):
            if lang in SHELL_LANGS:
                cmds.extend((doc.name, c) for c in shell_commands(body))
    return cmds


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (REPO / "Makefile").read_text(), flags=re.M))


def click_root(program: str) -> click.Command | None:
    """The click command behind a console script (None when it is not a click program we can load)."""
    eps = [e for e in entry_points(group="console_scripts") if e.name == program]
    if not eps:
        return None
    obj = eps[0].load()
    if isinstance(obj, click.Command):
        return obj
    cli = getattr(importlib.import_module(eps[0].module), "cli", None)
    return cli if isinstance(cli, click.Command) else None


def resolve(root: click.Command, program: str, args: list[str]) -> str | None:
    """Walk ``args`` through the click tree; return a problem, or None when every sub-command and option exists."""
    cmd, where, i = root, program, 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            break
        if tok.startswith("-") and tok != "-":
            name = tok.split("=", 1)[0]
            opt = next((p for p in cmd.get_params(click.Context(cmd)) if name in p.opts + p.secondary_opts), None)
            if opt is None:
                return f"`{where}` has no option {name}"
            takes_value = isinstance(opt, click.Option) and not opt.is_flag and not opt.count and "=" not in tok
            i += 2 if takes_value else 1
            continue
        if isinstance(cmd, click.Group):
            sub = cmd.get_command(click.Context(cmd), tok)
            if sub is None:
                known = ", ".join(sorted(cmd.list_commands(click.Context(cmd))))
                return f"`{where}` has no sub-command {tok!r}; it has: {known}"
            cmd, where = sub, f"{where} {tok}"
        i += 1
    if isinstance(cmd, click.Group) and not cmd.invoke_without_command and where != program:
        return f"`{where}` is a group: name one of its sub-commands"
    return None


def check_command(cmd: list[str], targets: set[str]) -> str | None:
    prog = cmd[0]
    base = Path(prog).name
    if prog.startswith((".venv/", "./.venv/")) and not (REPO / prog).exists() and base not in {
            e.name for e in entry_points(group="console_scripts")} | {"python", "python3", "pip"}:
        return f"{prog} is not a console script of this project's venv"
    if base == "make":
        missing = [t for t in cmd[1:] if not t.startswith("-") and "=" not in t and t not in targets]
        return f"Makefile has no target(s) {missing}" if missing else None
    if base in ("python", "python3") and "-m" in cmd:
        mod = cmd[cmd.index("-m") + 1]
        return None if importlib.util.find_spec(mod) else f"python -m {mod}: no such module"
    root = click_root(base) if base.startswith(("gtm-pipeline", "dagster")) else None
    if root is not None:
        return resolve(root, base, cmd[1:])
    if base.startswith(("gtm-pipeline", "dagster")):
        # A dagster tool that is not a plain click tree: its --help must succeed.
        res = subprocess.run([base, *[a for a in cmd[1:] if not a.startswith("-")][:2], "--help"],
                             capture_output=True, text=True, timeout=60)
        return None if res.returncode == 0 else f"{' '.join(cmd)}: --help failed: {res.stderr[-500:]}"
    if base in KNOWN_PROGRAMS:
        return None
    return f"unknown program {prog!r}; if the docs mean it, add it to KNOWN_PROGRAMS in this test"


def test_readme_starts_with_the_two_setup_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = fenced_blocks(text)
    assert blocks, "README.md has no code block"
    lang, body = blocks[0]
    first = [" ".join(c) for c in shell_commands(body)]
    assert first == ["make demo", "make test"], f"README's first commands are {first}"
    assert {"demo", "test"} <= makefile_targets()
    # Nothing but the title comes before them.
    before = text[:text.index("```")]
    assert [ln for ln in before.splitlines() if ln.strip() and not ln.startswith("# ")] == []


def test_docs_show_commands():
    docs = {d for d, _ in all_commands()}
    assert "README.md" in docs and "operations.md" in docs


@pytest.mark.parametrize("doc,cmd", all_commands(), ids=[f"{d}: {' '.join(c)[:70]}" for d, c in all_commands()])
def test_every_documented_command_exists(doc, cmd):
    problem = check_command(cmd, makefile_targets())
    assert problem is None, f"{doc}: `{' '.join(cmd)}`: {problem}"


@pytest.mark.parametrize("cmd,expect", [
    (["gtm-pipeline", "demo", "--days", "5"], None),
    (["gtm-pipeline", "dmeo"], "no sub-command"),
    (["gtm-pipeline", "run", "--form", "2026-08-01"], "no option --form"),
    (["make", "deploy-everything"], "no target"),
    (["dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", "3000"], None),
    (["dagster", "definitions", "validate", "-w", "workspace.yaml"], None),
    (["dagster", "defintions"], "no sub-command"),
    (["dagster-daemon", "run", "-w", "workspace.yaml"], None),
    (["dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", "3000"], None),
    (["dagster-webserver", "--no-such-flag"], "no option"),
    (["gtm-pipline", "demo"], "unknown program"),
])
def test_the_checker_catches_typos(cmd, expect):
    problem = check_command(cmd, makefile_targets())
    if expect is None:
        assert problem is None, problem
    else:
        assert problem is not None and expect in problem, problem


def test_lineage_picture_exists():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images, "README.md shows no lineage picture"
    for img in images:
        if not img.startswith("http"):
            assert (REPO / img).exists(), f"README.md links {img}, which does not exist"


def test_the_flow_picture_counts_what_the_contracts_hold():
    """The picture at the top says how many sources, entities and derived metrics there are: a contract added or
    dropped must change it (it said 20 derived metrics while 23 were shipped)."""
    picture = next(b for b in (REPO / "README.md").read_text().split("```") if "ingest ──► clean" in b)
    from gtm_pipeline.ingest.landing import load_landing_spec

    spec = load_landing_spec(REPO / "contracts")
    metrics = sorted(p.stem for p in (REPO / "contracts" / "metrics").glob("*.yaml"))
    facts = [m for m in metrics if m.startswith("fact_")]
    assert f"{len(metrics) - len(facts)} derived" in picture, picture
    assert f"{len(spec.entities())} entities" in picture and len(facts) == 3, picture
    assert f"{len(spec.sources)} sources" in picture, picture
