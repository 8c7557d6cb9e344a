"""The documentation: README.md and the MkDocs site under docs/ have no broken link and no missing page.

1. Every relative Markdown link in README.md and docs/**/*.md points to an existing file, and an `#anchor` into a
   Markdown page names one of its headings (MkDocs' slug rule: the heading's text, lowercased, punctuation other
   than '-' and '_' dropped, runs of spaces and '-' turned into one '-').
2. Every page under docs/ is in mkdocs.yml's nav, and every nav entry exists.
3. `mkdocs build --strict` succeeds (this also renders the API reference from the docstrings with mkdocstrings).

mkdocs and mkdocstrings[python] are in the `test` extra (`pip install -e ".[test]"`)."""

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CONFIG = REPO / "mkdocs.yml"

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
SNIPPET = re.compile(r"^-{1,}8<-{1,}\s+[\"']([^\"']+)[\"']\s*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _require_mkdocs():
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as err:
        pytest.fail(f"the docs need mkdocs and mkdocstrings[python] ({err}); they are in the test extra: "
                    "pip install -e '.[test]'", pytrace=False)


def _blank(match):
    return re.sub(r"[^\n]", " ", match.group(0))


def _without_code(text):
    """The text with fenced code blocks and inline code spans blanked out (line numbers kept)."""
    return INLINE_CODE.sub(_blank, FENCE.sub(_blank, text))


def _expand_snippets(text):
    """pymdownx.snippets includes (`--8<-- "data/README.md"`; paths relative to the repository root)."""
    return SNIPPET.sub(lambda m: (REPO / m.group(1)).read_text() if (REPO / m.group(1)).is_file() else "", text)


def slugify(heading):
    """MkDocs' heading id (Python-Markdown's toc.slugify) of a Markdown heading's source text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)      # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path):
    """The heading ids of a Markdown file, numbered as MkDocs numbers repeated ones (`id`, `id_1`, ...)."""
    seen, ids = {}, set()
    for match in HEADING.finditer(_without_code_keep_headings(_expand_snippets(path.read_text()))):
        slug = slugify(match.group(2))
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}_{seen[slug]}"
        else:
            seen[slug] = 0
        ids.add(slug)
    return ids


def _without_code_keep_headings(text):
    return FENCE.sub(_blank, text)


def markdown_files():
    return [REPO / "README.md"] + sorted(DOCS.rglob("*.md"))


def links(path):
    """(line number, target) of every inline and reference-style link and image of a Markdown file."""
    text = _without_code(path.read_text())
    found = []
    for pattern in (INLINE_LINK, REFERENCE_LINK):
        for match in pattern.finditer(text):
            found.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return sorted(found)


def broken_links(path):
    problems = []
    for line, target in links(path):
        if SCHEME.match(target) or target.startswith("//"):
            continue                                        # http(s):, mailto: ...: not checked here
        where = f"{path.relative_to(REPO)}:{line}: {target}"
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{where}: {destination.relative_to(REPO)} has no heading with the id '{anchor}'")
    return problems


def test_slug_rule_matches_mkdocs():
    assert slugify("Every method (`avloc demo --methods all`)") == "every-method-avloc-demo-methods-all"
    assert slugify("The 360° benchmark (`avloc data sphere`)") == "the-360-benchmark-avloc-data-sphere"
    assert slugify("LVS against PyTorch (`bench_train.py`)") == "lvs-against-pytorch-bench_trainpy"
    assert slugify("**A longer localisation warm-up (used)**") == "a-longer-localisation-warm-up-used"


def test_every_relative_link_resolves():
    assert (REPO / "README.md").is_file() and DOCS.is_dir()
    problems = [problem for path in markdown_files() for problem in broken_links(path)]
    checked = sum(len(links(path)) for path in markdown_files())
    assert checked > 50, f"only {checked} links found: is the link pattern still right?"
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_broken_links_are_caught(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "b.md").write_text("# Title\n\n## A section: `code`\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#a-section-code) [gone](c.md) [bad anchor](b.md#nope)\n"
                    "`[in code](c.md)` [web](https://example.org/x.md)\n```\n[fenced](c.md)\n```\n")
    problems = "\n".join(broken_links(page))
    assert problems.count("\n") == 1 and "a.md:1: c.md: no such file" in problems and "id 'nope'" in problems


def _nav_pages(entries):
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            if isinstance(value, list):
                yield from _nav_pages(value)
            elif not SCHEME.match(value):
                yield value


def _load_config():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml uses MkDocs' own tags (`!relative $config_dir`); their values do not matter here
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load(CONFIG.read_text(), Loader=Loader)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    _require_mkdocs()
    config = _load_config()
    assert config.get("docs_dir", "docs") == "docs" and config.get("strict") is True
    nav = list(_nav_pages(config["nav"]))
    assert len(nav) == len(set(nav)), f"pages listed twice in the nav: {sorted({p for p in nav if nav.count(p) > 1})}"
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    missing = sorted(page for page in nav if page not in pages)
    unlisted = sorted(pages - set(nav))
    assert not missing, f"mkdocs.yml's nav lists pages that do not exist under docs/: {missing}"
    assert not unlisted, f"pages under docs/ that mkdocs.yml's nav does not list: {unlisted}"


def test_mkdocs_build_strict(tmp_path):
    _require_mkdocs()
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(CONFIG),
                             "-d", str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True, timeout=300)
    output = (result.stderr + result.stdout).strip()
    assert result.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(output.splitlines()[-40:])
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for module in ("keras_avloc.models", "keras_avloc.data", "keras_avloc.evaluation", "keras_avloc.training"):
        assert f'id="{module}"' in api, f"the API reference does not render {module}"
