"""The documentation's relative links resolve: README.md is a front page that points into docs/, and a
renamed file or heading must not leave a dead link behind.

Checked: every relative markdown link and image (inline `[text](target)`, `![alt](target)` and reference
definitions `[name]: target`) in README.md, docs/*.md and assets/README.md must name an existing file, and
an `#anchor` into a markdown file (or within the same file) must name one of its headings, slugged as
GitHub slugs them. Links inside code blocks and code spans are not links. URLs with a scheme are not
fetched (no network in tests).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
# A code span may wrap onto the next line of its paragraph, never across a blank line.
CODE_SPAN = re.compile(r"(`+)(?:(?!\1)[^\n]|\n(?![ \t]*\n))+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "assets" / "README.md"]


def unfenced(text: str) -> list[str]:
    """The lines of a markdown text with those of fenced code blocks (fences included) emptied."""
    lines, fenced = [], None
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence and fenced is None:
            fenced = fence.group(1)
        elif fence and fence.group(1) == fenced:
            fenced = None
        elif fenced is None:
            lines.append(line)
            continue
        lines.append("")
    return lines


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the prose: fenced blocks emptied, code spans blanked."""
    prose = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), "\n".join(unfenced(text)))
    return list(enumerate(prose.split("\n"), 1))


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in the prose of a markdown text."""
    found = []
    for number, line in prose_lines(text):
        targets = [m.group(1) for m in INLINE_LINK.finditer(line)]
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
        found += [(number, target.strip("<>")) for target in targets]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image in a heading: its text
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in unfenced(path.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if not heading:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """One message per link of ``path`` that does not resolve."""
    problems = []
    for number, target in links(path.read_text(encoding="utf-8")):
        if SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{number}: {target}"
        if not resolved.exists():
            problems.append(f"{where}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
            problems.append(f"{where}: no heading with anchor #{anchor} in {resolved.name}")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    assert path.is_file()
    assert broken_links(path) == []


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_links_into_every_doc() -> None:
    readme = {target.partition("#")[0] for _, target in links((ROOT / "README.md").read_text(encoding="utf-8"))}
    docs = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md") if not p.name.endswith("-snippet.md")}
    assert docs - readme == set(), "docs/ pages the README does not link to"


def test_readme_keeps_the_commands_ci_runs() -> None:
    """.ci/run runs the README's install and test commands and says so in its comments."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]" && pytest' in readme


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Levers beyond the official recipe", "levers-beyond-the-official-recipe"),
        ("Text encoder (phase 0)", "text-encoder-phase-0"),
        ("Sampling, start-up and data loading", "sampling-start-up-and-data-loading"),
        ("`--init-from`: fine-tuning", "--init-from-fine-tuning"),
        ("StackGAN++ vs AttnGAN on toy-birds", "stackgan-vs-attngan-on-toy-birds"),
        ("Session 9: width, hard wrong pairs", "session-9-width-hard-wrong-pairs"),
        ("Batching, and why a response never depends", "batching-and-why-a-response-never-depends"),
        ("See [the table](x.md) **now**", "see-the-table-now"),
    ],
)
def test_slug_matches_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_checker_finds_dead_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md) [fine](other.md#other-page) [fine](other.md#twice-1) ![fine](image.png)\n"
        "[fine](#page) [fine](https://example.com/missing.md)\n"
        "[fine]: <other.md>\n"
        "`[code span](missing.md)` and a code span that wraps `onto\n[the next line](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
        "[dead file](missing.md)\n"
        "![dead image](images/missing.png \"title\")\n"
        "[dead anchor](other.md#twice-2)\n"
        "[dead local anchor](#nowhere)\n"
        "[ref]: ../nowhere/file.md\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert [p.split(": ")[1] for p in problems] == [
        "missing.md",
        "images/missing.png",
        "other.md#twice-2",
        "#nowhere",
        "../nowhere/file.md",
    ], problems
