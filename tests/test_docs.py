"""The README and docs/ point at files that exist: pages they link, and the benchmark records their results name."""

import re

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_to_files_resolve(page):
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [t for t in targets if "://" not in t]
    missing = [t for t in local if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_benchmark_records_named_in_tables_exist(page):
    """A results row names its record (`dekm_usps.md`); a renamed or deleted record would leave the figure unsourced."""
    rows = [line for line in page.read_text().splitlines() if line.startswith("| ")]
    named = {name for row in rows for name in re.findall(r"`([\w.{},-]+\.(?:md|json|csv|txt))`", row)}
    results = REPO / "benchmarks" / "results"
    missing = sorted(n for n in named if "{" not in n and not (results / n).exists())
    assert not missing, f"{page.name} names records missing from benchmarks/results/: {missing}"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_to_sections_resolve(page):
    """A link to a section (``docs/usage.md#your-own-data``) names a heading that is there."""
    missing = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
        linked = (page.parent / target) if target else page
        headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)
        if anchor not in {github_anchor(h) for h in headings}:
            missing.append(f"{target}#{anchor}")
    assert not missing, f"{page.name} links to sections that are not there: {missing}"


def test_readme_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    unlinked = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
