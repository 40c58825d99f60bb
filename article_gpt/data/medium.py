"""Medium's "Download your information" archive -> one clean .txt per story.

The archive (a .zip, or the folder it unpacks to) holds ``posts/*.html``, one file per story:
published stories as ``YYYY-MM-DD_<Slug>-<id>.html``, drafts as ``draft_<Slug>-<id>.html``.
Each file has the title in ``<h1 class="p-name">``, an optional ``<section data-field="subtitle">``,
the body in ``<section data-field="body">`` and a ``<footer>`` (byline, date, canonical link).

A story becomes its title, then the body's blocks in order: paragraphs, headings (the
subtitle, an ``h4.graf--subtitle``, among them), block and pull quotes, list items
(``- `` / ``1. ``) and code blocks (line breaks kept), separated by blank lines, inline markup
flattened. Left out: the body's ``graf--title`` heading (it repeats the title), images, figure
captions, embeds (iframes, link cards), dividers, the footer's byline/signature and links, and
the subtitle section (Medium's preview text, which repeats the subtitle or the first paragraph).

Responses (short replies to other stories) sit in ``posts/`` too, looking like stories. They
are told apart by having no title heading in the body and a title that is the start of their
first paragraph (Medium titles a response with its opening words).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bs4 import BeautifulSoup, NavigableString, Tag

from article_gpt.errors import DataError

BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "li"}
DROP = {"figure", "figcaption", "img", "iframe", "script", "style", "nav", "footer", "hr", "noscript"}
ID_SUFFIX = re.compile(r"-[0-9a-f]{8,16}$")  # Medium's story id after the slug


@dataclass
class Story:
    source: str  # the file inside the archive, e.g. posts/2020-01-05_Hello-1a2b3c4d5e6f.html
    name: str  # the .txt name: date and slug
    title: str
    text: str
    kind: str  # story | draft | response

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class ImportReport:
    imported: list[Story] = field(default_factory=list)
    skipped: list[tuple[Story, str]] = field(default_factory=list)  # (story, why)

    def lines(self, out: Path) -> list[str]:
        rows = [f"imported  {s.name}  ({s.words:,} words)" for s in self.imported]
        rows += [f"skipped   {s.source}  ({s.words:,} words): {why}" for s, why in self.skipped]
        total = sum(s.words for s in self.imported)
        kinds = [s.kind for s, _ in self.skipped]
        rows.append(f"{len(self.imported)} stories imported ({total:,} words) into {out}; skipped "
                    f"{kinds.count('draft')} drafts, {kinds.count('response')} responses, "
                    f"{kinds.count('story')} without text")
        return rows


def _words(text: str) -> str:
    """Runs of whitespace (HTML source line breaks, no-break spaces) as one space, trimmed."""
    return " ".join(text.split())


def _text(node: Tag, pre: bool = False) -> str:
    """A block's text with inline markup flattened. ``<br>`` breaks the line; outside code,
    whitespace is collapsed within each line."""
    lines = [""]
    for child in node.descendants:
        if isinstance(child, Tag) and child.name == "br":
            lines.append("")
        elif type(child) is NavigableString and child.find_parent(DROP) is None:  # not a comment
            lines[-1] += str(child)
    if pre:
        return "\n".join(lines).strip("\n")
    return "\n".join(line for line in map(_words, lines) if line)


def _blocks(body: Tag) -> list[str]:
    """The body's text blocks in document order, as they will be written."""
    out: list[str] = []
    last_list = None  # the <ul>/<ol> of the previous block, if it was a list item
    for node in body.find_all(BLOCKS):
        if node.find_parent(DROP) or node.find(BLOCKS) or "graf--title" in (node.get("class") or []):
            continue  # dropped; holds blocks (those are written instead); or repeats the title
        text = _text(node, pre=node.name == "pre")
        if not text.strip():
            continue
        parent = node.find_parent(["ul", "ol"]) if node.name == "li" else None
        if parent is not None:
            number = len(node.find_previous_siblings("li")) + 1
            text = f"{number}. {text}" if parent.name == "ol" else f"- {text}"
            if parent is last_list:  # the items of one list stay on consecutive lines
                out[-1] += "\n" + text
                continue
        out.append(text)
        last_list = parent
    return out


def story_name(source: str) -> str:
    """``posts/2020-01-05_Hello-World-1a2b3c4d5e6f.html`` -> ``2020-01-05_Hello-World.txt``."""
    return ID_SUFFIX.sub("", PurePosixPath(source).stem) + ".txt"


def parse_story(source: str, html: str) -> Story:
    soup = BeautifulSoup(html, "html.parser")
    body = soup.find("section", attrs={"data-field": "body"})
    if body is None:
        raise DataError(f"{source}: no <section data-field=\"body\">: not a Medium story")
    h1 = soup.find("h1", class_="p-name")
    title = _words(h1.get_text()) if h1 else ""
    blocks = _blocks(body)
    kind = "draft" if PurePosixPath(source).name.startswith("draft_") else "story"
    has_title_heading = body.find(class_="graf--title") is not None
    if kind == "story" and not has_title_heading and blocks and title:
        opening = title.rstrip("….").strip()
        if blocks[0].replace("\n", " ").startswith(opening):
            kind = "response"
    text = "\n\n".join(([title] if title else []) + blocks)
    return Story(source, story_name(source), title, text + "\n" if blocks else "", kind)


def read_archive(path: Path) -> list[tuple[str, str]]:
    """(name inside the archive, HTML) of every ``posts/*.html``, sorted by name."""
    if path.is_dir():
        posts = [p for p in sorted(path.rglob("*.html")) if p.parent.name == "posts"]
        if not posts:
            raise DataError(f"{path}: no posts/*.html inside (Medium's export holds them in posts/)")
        names = [p.relative_to(path).as_posix() for p in posts]
        return [(n, _decode(n, p.read_bytes())) for n, p in zip(names, posts)]
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a zip file (pass Medium's export .zip or the folder it unpacks to)")
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist()
                       if n.endswith(".html") and PurePosixPath(n).parent.name == "posts")
        if not names:
            raise DataError(f"{path}: no posts/*.html inside (Medium's export holds them in posts/)")
        return [(n, _decode(n, zf.read(n))) for n in names]


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: not UTF-8 (byte {err.start}); Medium exports UTF-8 HTML") from None


def import_medium(archive: str | Path, out: str | Path, include_drafts: bool = False,
                  include_responses: bool = False) -> ImportReport:
    """Write one .txt per story of ``archive`` into ``out``; every story is parsed before
    anything is written, so a bad one leaves ``out`` untouched."""
    archive, out = Path(archive).expanduser(), Path(out).expanduser()
    stories = [parse_story(name, html) for name, html in read_archive(archive)]
    report = ImportReport()
    for story in stories:
        if not story.text:
            report.skipped.append((story, "no text in the body"))
        elif story.kind == "draft" and not include_drafts:
            report.skipped.append((story, "a draft (--include-drafts imports it)"))
        elif story.kind == "response" and not include_responses:
            report.skipped.append((story, "a response (--include-responses imports it)"))
        else:
            report.imported.append(story)
    names = [s.name for s in report.imported]
    for story in report.imported:
        if names.count(story.name) > 1:  # two stories with one date and slug: keep the id
            story.name = PurePosixPath(story.source).stem + ".txt"
    out.mkdir(parents=True, exist_ok=True)
    for story in report.imported:
        (out / story.name).write_text(story.text, encoding="utf-8")
    return report
