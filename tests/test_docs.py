"""README is the user's entry and docs/ holds the rest: every link between them resolves,
and every module README's "How it is built" names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return out


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_readme_is_the_entry():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert len(text.splitlines()) < 250  # the long material lives in docs/
    for page in sorted((ROOT / "docs").glob("*.md")):  # every page is reachable from README
        assert f"(docs/{page.name})" in text, page.name


def test_how_it_is_built_names_modules_that_exist():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## How it is built") : text.index("## Read more")]
    named = set(re.findall(r"`((?:musiclime|pipeline|actors|schemas|tests)/[\w/]+\.py)`", section))
    assert len(named) > 10
    missing = [n for n in named if not (ROOT / n).exists()]
    engine = re.findall(r"`pipeline/engine/policy\.py`, `(\w+\.py)`, `(\w+\.py)`, `(\w+\.py)`", section)
    missing += [
        f"pipeline/engine/{n}" for group in engine for n in group if not (ROOT / "pipeline/engine" / n).exists()
    ]
    assert not missing, missing
