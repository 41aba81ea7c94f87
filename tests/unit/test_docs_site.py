"""The docs site's structure, checked without mkdocs: every page under ``docs/`` is in the
nav of ``mkdocs.yml``, and every relative link in the READMEs and the docs pages resolves to a
file of the repository and, for a Markdown page, to a heading of that page.

``scripts/test.sh`` also builds the site with ``mkdocs build --strict``; this test makes the
same mistakes fail where mkdocs is not installed, and covers the READMEs, which are not pages
of the site.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "README.ja.md", *sorted(DOCS.rglob("*.md"))]


def nav_pages(nav: object) -> list[str]:
    """Every page file the nav names, at any depth."""
    if isinstance(nav, str):
        return [] if "://" in nav else [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def slug(heading: str) -> str:
    """The anchor GitHub (and mkdocs' toc, for these headings) gives a heading."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(text):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    # Code is not a link: blank it out, keeping line numbers.
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    text = _INLINE_CODE.sub("", text)
    links = []
    for match in _LINK.finditer(text):
        target = match.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        links.append((text.count("\n", 0, match.start()) + 1, target))
    return links


def broken(path: Path, target: str) -> str | None:
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    if not dest.exists():
        return f"no file {file_part}"
    if ROOT not in dest.parents and dest != ROOT:
        return "leads outside the repository"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"no heading #{anchor} in {dest.relative_to(ROOT)}"
    return None


def test_every_docs_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["docs_dir"] == "docs"
    listed = nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(pages) - set(listed)) == [], "add these pages to nav in mkdocs.yml"
    assert sorted(set(listed) - set(pages)) == [], "nav names pages that do not exist"
    assert len(listed) == len(set(listed)), "a page is in the nav twice"


def test_the_checks_find_links_and_anchors() -> None:
    # Guards the extraction: the README links into the docs and to its own headings.
    readme = dict((t, n) for n, t in relative_links(ROOT / "README.md"))
    assert any(t.startswith("docs/") for t in readme)
    assert "how-it-works" in anchors(ROOT / "README.md")
    assert broken(ROOT / "README.md", "docs/no-such-page.md") == "no file docs/no-such-page.md"
    assert broken(ROOT / "README.md", "#no-such-heading") is not None
    assert broken(ROOT / "README.md", "#how-it-works") is None
    assert slug("Legacy API (/mi-distcomp-api/)") == "legacy-api-mi-distcomp-api"
    assert slug("Broker (HTTPS pull)") == "broker-https-pull"


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    problems = [
        f"{doc.relative_to(ROOT)}:{line}: ({target}) {problem}"
        for line, target in relative_links(doc)
        if (problem := broken(doc, target)) is not None
    ]
    assert problems == []
