"""mkdocs hook: the config reference's key tables, generated from the YAML files of
``inat_lightning/conf/`` at build time, so the page cannot drift from the configs (every key,
its default and its comment, one table per file)."""

from __future__ import annotations

import re
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "inat_lightning" / "conf"
MARKER = "<!-- config keys -->"
LINE = re.compile(r"^(?P<indent> *)(?P<key>[\w/@.+~-]+):(?P<value>[^#]*?)\s*(?:#\s?(?P<note>.*))?$")


def package(path: Path) -> str:
    """Where a config file's keys land in the composed config: its ``# @package`` line, else
    its group (``data/imagefolder.yaml``: ``data``; a primary config: the root)."""
    found = re.search(r"^# @package (\S+)", path.read_text(encoding="utf-8"), re.M)
    if found:
        return "" if found.group(1) == "_global_" else found.group(1)
    return ".".join(path.relative_to(CONF).parent.parts)


def keys_of(path: Path) -> list[tuple[str, str, str]]:
    """``(dotted key, default, comment)`` of each key a YAML file sets, as the command line
    names it (list items and the defaults list left out)."""
    rows, stack, prefix = [], [], package(path)
    for line in path.read_text(encoding="utf-8").splitlines():
        m = LINE.match(line)
        if not m or line.lstrip().startswith(("#", "-")):
            continue
        depth = len(m["indent"]) // 2
        stack[depth:] = [m["key"]]
        if stack[0] == "defaults":
            continue
        value = m["value"].strip()
        key = ".".join([prefix, *stack] if prefix else stack)
        rows.append((key, value, (m["note"] or "").strip()))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def tables() -> str:
    out = []
    for path in sorted(CONF.rglob("*.yaml")):
        rows = keys_of(path)
        if not rows:
            continue
        out += [f"### `{path.relative_to(CONF).as_posix()}`", "", "| key | default | note |",
                "|---|---|---|"]  # fmt: skip
        out += [f"| `{k}` | `{_cell(v)}` | {_cell(n)} |" if v else f"| `{k}` | | {_cell(n)} |"
                for k, v, n in rows]  # fmt: skip
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, **_) -> str:
    """Put the tables where the config reference page has the marker."""
    return markdown.replace(MARKER, tables()) if MARKER in markdown else markdown
