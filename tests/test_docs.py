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


def test_readme_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    unlinked = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
