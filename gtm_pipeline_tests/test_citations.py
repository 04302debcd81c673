"""Comments that point somewhere point to files that exist (issue 16 §4).

Code, contracts and docs cite the design sources, which are copied into the repo: spec 000/001/002 are
docs/spec/<NNN>-*.txt (see docs/spec/README.md), the design is docs/design.md and the style rules docs/style.md.
Every tracked text file is checked for three things: (a) no citation of a file outside the repo, (b) every
repo-relative path a comment, docstring or doc cites (docs/..., contracts/...) exists, and (c) every spec citation
names its spec (a bare section sign after "spec" would leave the reader guessing which one).
The copies themselves are not checked: they are quoted verbatim."""

from __future__ import annotations

import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".toml"}
COPIES = {"docs/design.md", "docs/style.md"}

# (a) Citations of the originals outside the repo. The patterns are written so this file does not match itself.
OUTSIDE = [
    (re.compile(r"(?<![\w/.])DESIGN[ ]§"), "docs/design.md §N"),
    (re.compile(r"(?<![\w/.])DESIGN[.]md"), "docs/design.md"),
    (re.compile(r"(?<![\w/.])STYLE[ ]rule"), "docs/style.md rule N"),
    (re.compile(r"(?<![\w/.])STYLE[.]md"), "docs/style.md"),
    (re.compile(r"[.][.]/shared/spec\b"), "docs/spec/<NNN>-<name>.txt (see docs/spec/README.md)"),
]
# (c) A spec citation without its number, and a numbered spec that has no copy in docs/spec/.
BARE_SPEC = re.compile(r"\bspec[ ]\(?§", re.IGNORECASE)
NUMBERED_SPEC = re.compile(r"\bspec[ ](\d{3})\b", re.IGNORECASE)
# (b) Repo-relative paths of docs and contracts. Templates (<entity>, {name}) and globs (*.yaml) never match: the
# character class stops at them, and the match must end in a file extension.
REPO_PATH = re.compile(r"(?<![\w./<>{}*-])((?:docs|contracts)/[\w./-]*\w\.(?:md|txt|yaml|yml))(?![\w/*<{-])")
MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def text_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e}); the citation check lists files with git ls-files")
    files = []
    for rel in sorted(set(out.splitlines())):
        if Path(rel).suffix not in SUFFIXES or rel in COPIES:
            continue
        if rel.startswith("docs/spec/") and rel.endswith(".txt"):
            continue
        if (REPO / rel).is_file():
            files.append(rel)
    return files


FILES = text_files()


def read(rel: str) -> str:
    return (REPO / rel).read_text(encoding="utf-8", errors="replace")


def lines(rel: str) -> Iterator[tuple[int, str]]:
    yield from enumerate(read(rel).splitlines(), 1)


def commentary(rel: str) -> Iterator[tuple[int, str]]:
    """(line, text) of what a reader takes as prose: comments and docstrings of Python, comments of YAML and TOML,
    all of Markdown and plain text. String literals a program uses (test data, messages) are left out."""
    if rel.endswith(".py"):
        yield from _python_commentary(read(rel))
    elif rel.endswith((".md", ".txt")):
        yield from lines(rel)
    else:
        for no, line in lines(rel):
            if "#" in line:
                yield no, line[line.index("#"):]


def _python_commentary(source: str) -> Iterator[tuple[int, str]]:
    previous = tokenize.NEWLINE
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
        elif tok.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT,
                                                          tokenize.DEDENT, tokenize.ENCODING):
            nxt = next((t for t in tokens[i + 1:] if t.type not in (tokenize.COMMENT, tokenize.NL)), None)
            if nxt is not None and nxt.type in (tokenize.NEWLINE, tokenize.ENDMARKER):  # a bare string: a docstring
                for offset, part in enumerate(tok.string.splitlines()):
                    yield tok.start[0] + offset, part
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            previous = tok.type


def test_the_citation_check_sees_the_tree():
    assert "gtm_pipeline/clock.py" in FILES and "README.md" in FILES, "git ls-files listed none of the known files"
    assert (REPO / "docs/spec/002-decision-os.txt").is_file(), "docs/spec/002-decision-os.txt, the cited spec, is gone"


@pytest.mark.parametrize("rel", FILES)
def test_citations_point_inside_the_repo(rel):
    problems = []
    for no, line in lines(rel):
        for rx, fix in OUTSIDE:
            for m in rx.finditer(line):
                problems.append(f"{rel}:{no}: {m.group(0)!r} cites a file outside the repo; write {fix!r} instead")
        for m in BARE_SPEC.finditer(line):
            problems.append(f"{rel}:{no}: {m.group(0)!r} does not say which spec; write 'spec 002 §N' for the "
                            "Decision OS (docs/spec/002-decision-os.txt), or 'spec 000'/'spec 001' for the others")
        for m in NUMBERED_SPEC.finditer(line):
            if not list((REPO / "docs/spec").glob(f"{m.group(1)}-*.txt")):
                problems.append(f"{rel}:{no}: {m.group(0)!r} has no copy docs/spec/{m.group(1)}-<name>.txt; add "
                                "the copy (and a line in docs/spec/README.md) or cite an existing spec")
    assert not problems, "\n".join(problems)



@pytest.mark.parametrize("rel", FILES)
def test_cited_paths_exist(rel):
    problems = []
    for no, text in commentary(rel):
        for m in REPO_PATH.finditer(text):
            if text[m.end():m.end() + 1] == ":":
                continue  # "contracts/x.yaml: field: problem" is an example error message, not a citation
            if not (REPO / m.group(1)).exists():
                problems.append(f"{rel}:{no}: cites {m.group(1)}, which does not exist; fix the path or drop the "
                                "citation")
        if rel.endswith(".md"):
            for m in MD_LINK.finditer(text):
                target = m.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or "<" in target or "*" in target:
                    continue  # a URL or a template, not a file of the repo
                if not ((REPO / rel).parent / target).exists():
                    problems.append(f"{rel}:{no}: links to {target}, which does not exist next to {rel}; fix the "
                                    "link")
    assert not problems, "\n".join(problems)
