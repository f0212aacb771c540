"""Every relative link in the repository's markdown resolves, and so does every mention of a
docs/ page in code and configuration: a file that exists and, for ``#anchor``, a heading in it
(GitHub's slugs). .ci/run runs this file before the long tests."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Markdown read for links: the front door, the docs, the contributor guide, the other READMEs.
MARKDOWN_GLOBS = ["*.md", "docs/**/*.md", "scripts/**/*.md", "bench/*.md", "compose/**/*.md"]
# Files that name docs/ pages in comments, strings or fields.
POINTER_GLOBS = ["Makefile", "Dockerfile", "config.json", ".ci/run", "compose/**/*",
                 "plugin/pylog/**/*.py", "scripts/**/*", "tests/**/*.py", "bench/*.py"]

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_DOCS_MENTION = re.compile(r"(?<![\w/.-])docs/[\w./-]*[\w/](?:#[\w-]+)?")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text without markup, lowercased, punctuation other
    than '-' and '_' dropped, spaces made '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with code spans blanked."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(_CODE_SPAN.sub("", line))
    return out


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings; repeats get -1, -2... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text().splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else _HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """The link targets of a markdown file (inline and reference style), code left out."""
    out = []
    for line in _prose_lines(path.read_text()):
        out += _INLINE.findall(line)
        m = _REFERENCE.match(line)
        if m:
            out.append(m.group(1))
    return out


def broken(source: Path, target: str, root: Path = ROOT) -> str | None:
    """Why ``target`` (relative to ``source``, or to the root when it starts with docs/ in a
    non-markdown file) does not resolve; None when it does."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:...
        return None
    file_part, _, anchor = target.partition("#")
    if file_part:
        base = root if source.suffix != ".md" else source.parent
        dest = (base / file_part).resolve()
    else:
        dest = source
    if not dest.exists():
        return f"{target}: no such file {dest.relative_to(root) if dest.is_relative_to(root) else dest}"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{target}: no heading with the anchor #{anchor} in {dest.name}"
    return None


def _files(globs: list[str], root: Path) -> list[Path]:
    out: set[Path] = set()
    for pattern in globs:
        out.update(p for p in root.glob(pattern) if p.is_file())
    skip = ("egg-info", "__pycache__", ".venv", "/build/")
    return sorted(p for p in out if not any(s in str(p) for s in skip))


def problems(root: Path = ROOT) -> list[str]:
    """Every link or docs/ mention under ``root`` that does not resolve, as 'file: why'."""
    out = []
    for md in _files(MARKDOWN_GLOBS, root):
        for target in links(md):
            why = broken(md, target, root)
            if why:
                out.append(f"{md.relative_to(root)}: {why}")
    for f in _files(POINTER_GLOBS, root):
        if f.suffix == ".md" or f.name == Path(__file__).name:
            continue
        try:
            text = f.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary files name no pages
        for mention in sorted(set(_DOCS_MENTION.findall(text))):
            why = broken(f, mention, root)
            if why:
                out.append(f"{f.relative_to(root)}: {why}")
    return out


def test_every_link_and_docs_mention_resolves() -> None:
    assert problems() == []


def test_the_pages_that_code_and_config_point_at_exist() -> None:
    # Linked from the Makefile, Dockerfile, config.json, compose/ and tests/test_compose.py.
    for page in ("docs/managed-plugin.md", "docs/compose.md"):
        assert (ROOT / page).stat().st_size > 1000, page


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The `x` option, and more\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md) [ok](docs/a.md#the-x-option-and-more) [ok](#top) [web](https://x.y)\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#nope)\n"
        "`[in code](docs/c.md)`\n```\n[in a fence](docs/d.md)\n```\n# Top\n")
    (tmp_path / "Makefile").write_text("# see " + "docs" + "/a.md and " + "docs" + "/e.md\n")
    found = problems(tmp_path)
    assert len(found) == 3, found
    assert any("docs/b.md: no such file" in p for p in found)
    assert any("#nope" in p for p in found)
    assert any(p.startswith("Makefile:") and "e.md" in p for p in found)


def test_slugs_are_githubs() -> None:
    assert slug("Set up on a fresh machine (Debian 12 or 13, as root)") == \
        "set-up-on-a-fresh-machine-debian-12-or-13-as-root"
    assert slug("Enable: `docker plugin enable --timeout 0`") == \
        "enable-docker-plugin-enable---timeout-0"
    assert slug("pylog's own log") == "pylogs-own-log"
    assert slug("`docker logs` of a big container") == "docker-logs-of-a-big-container"
