"""README.md runs as written: every ```sh block, top to bottom, in one shell, on a fresh embedded home.

The blocks are joined into one bash script (`set -euo pipefail`), so a variable set in one block
(`CODE=$(trackctl assign 42 correios)`) is there in the next, and any command that fails stops the
run with the block and line that failed. A block is left out only when the line before its fence is
`<!-- not run: REASON -->`: the set-up commands, which `.ci/run` itself runs on a clean checkout.
```text blocks are sample output and are not run. ```python blocks are run too, each as its own
program after the shell blocks before it, in the same directory and environment.

The environment is what a new user has: a new HOME, a new TRACKCTL_HOME, no database URL, PATH
with the installed trackctl first. `crontab` is a small stand-in on PATH that keeps the user's
crontab in a file under HOME (this machine has no cron), and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(?P<lang>[a-z]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<why>[^>]+?)\s*-->\s*\n\s*$")
RUN_LANGS = {"sh", "python"}
KNOWN_LANGS = RUN_LANGS | {"text", "json"}

CRONTAB_STANDIN = """#!/bin/sh
# Stand-in for crontab(1): the user's crontab is the file $HOME/.crontab.
file="$HOME/.crontab"
case "$1" in
  -l) [ -f "$file" ] && cat "$file" && exit 0; echo "no crontab for $(id -un)" >&2; exit 1 ;;
  -r) rm -f "$file" ;;
  -) cat > "$file" ;;
  *) [ -n "$1" ] && cp "$1" "$file" || { echo "usage: crontab [-l|-r|-|FILE]" >&2; exit 1; } ;;
esac
"""


@dataclass(frozen=True)
class Block:
    number: int  # 1-based among all fenced blocks
    line: int  # line of the opening fence in README.md
    lang: str
    body: str
    skipped_because: str | None


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for n, m in enumerate(FENCE.finditer(text), start=1):
        before = text[:m.start()]
        skipped = NOT_RUN.search(before[-300:])
        blocks.append(Block(n, before.count("\n") + 1, m["lang"], m["body"],
                            skipped["why"] if skipped else None))
    return blocks


def test_every_readme_block_is_fenced_with_a_known_language():
    text = README.read_text(encoding="utf-8")
    blocks = readme_blocks(text)
    assert len(blocks) >= 15, "the README's examples are not fenced blocks any more?"
    unknown = [f"README.md:{b.line}: ```{b.lang}" for b in blocks if b.lang not in KNOWN_LANGS]
    assert unknown == [], f"fence every block as one of {sorted(KNOWN_LANGS)}: {unknown}"
    # No indented code blocks left over: every example must be visible to this test.
    outside = FENCE.sub("", text)
    indented = [line for line in outside.splitlines() if line.startswith("    ") and line.strip().startswith("trackctl")]
    assert indented == [], f"indented command lines this test cannot see: {indented}"
    skipped = [b for b in blocks if b.skipped_because]
    assert len(skipped) <= 2, [f"README.md:{b.line}: {b.skipped_because}" for b in skipped]


def _script(blocks: list[Block]) -> str:
    lines = ["set -euo pipefail",
             'trap \'echo "README block $BLOCK (README.md line $BLOCK_LINE) failed at script line $LINENO" >&2\' ERR']
    for b in blocks:
        lines.append(f"BLOCK={b.number}; BLOCK_LINE={b.line}")
        if b.lang == "sh":
            lines.append(b.body)
        else:  # python: its own program, after the shell blocks before it
            lines.append(f"python3 - <<'README_PYTHON_{b.number}'\n{b.body}README_PYTHON_{b.number}")
        lines.append(f'echo "README block {b.number} done" >&2')
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_readme_runs_as_written_on_a_fresh_embedded_home(tmp_path, fresh_home):
    blocks = [b for b in readme_blocks(README.read_text(encoding="utf-8"))
              if b.lang in RUN_LANGS and not b.skipped_because]
    home, work, tools = tmp_path / "home", tmp_path / "work", tmp_path / "tools"
    for d in (home, work, tools):
        d.mkdir()
    crontab = tools / "crontab"
    crontab.write_text(CRONTAB_STANDIN)
    crontab.chmod(0o755)
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "trackctl").exists(), "the installed trackctl is not next to this Python"
    trackctl_home = fresh_home
    env = {"HOME": str(home), "TRACKCTL_HOME": str(trackctl_home), "LANG": "C.UTF-8",
           "PATH": f"{venv_bin}:{tools}:/usr/local/bin:/usr/bin:/bin", "SHELL": "/bin/bash"}
    script = tmp_path / "readme.sh"
    script.write_text(_script(blocks))
    try:
        r = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True,
                           timeout=600, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run([str(venv_bin / "trackctl"), "db", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(trackctl_home, ignore_errors=True)
    done = r.stderr.count("README block ") - r.stderr.count("failed at script line")
    assert r.returncode == 0, (f"README.md stopped after {done} of {len(blocks)} blocks (exit {r.returncode})\n"
                               f"--- stderr (last 3000 chars) ---\n{r.stderr[-3000:]}\n"
                               f"--- stdout (last 2000 chars) ---\n{r.stdout[-2000:]}")
    assert all(f"README block {b.number} done" in r.stderr for b in blocks)
