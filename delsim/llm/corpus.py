"""English prose corpus for the embedded default LM: loading, hash split, held-out file, prompts.

Two sources ship with a registry package, so no network is needed:

``"python-docs"``
    Prose paragraphs of the Python documentation as HTML, from Debian's ``python3.11-doc``
    package (``/usr/share/doc/python3.11/html``). Code blocks, tables and navigation are dropped.
``"pydoc"``
    The topic help texts in the standard library's ``pydoc_data.topics`` (about 65k words). Always
    installed, so tests use it.

Every paragraph goes to the train, validation or held-out split by a SHA-256 hash of its text, so
the split does not depend on the order, the number of paragraphs or the machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from delsim.llm.defaults import DEFAULT_CORPUS_DIR

logger = logging.getLogger(__name__)

CORPUS_SOURCES = ("python-docs", "pydoc")
"""Names accepted by :func:`load_corpus_paragraphs`."""

PYTHON_DOCS_DIR = Path("/usr/share/doc/python3.11/html")
"""Install folder of the HTML documentation in Debian's ``python3.11-doc`` package."""

PYTHON_DOCS_PACKAGE = "python3.11-doc"
"""Debian package that provides :data:`PYTHON_DOCS_DIR`."""

HELDOUT_FILENAME = "heldout.txt"
"""Held-out paragraphs, one per line, UTF-8."""

PROVENANCE_FILENAME = "provenance.json"
"""Source, package version and counts of the held-out file."""

SPLIT_PERCENT = {"train": 90, "validation": 5, "heldout": 5}
"""Share of paragraphs per split, in percent of hash buckets."""

LONG_PARAGRAPH_WORDS = 100
"""Paragraphs of at least this many words can give a prompt of 50 words plus a reference."""

LONG_PARAGRAPH_SPLIT_PERCENT = {"train": 45, "validation": 10, "heldout": 45}
"""Split shares for long paragraphs, which are rare in documentation prose (about 1 in 80).

A larger held-out share leaves a few hundred of them for prompt examples while costing the
training split only a few percent of its words.
"""

MIN_PARAGRAPH_WORDS = 5
"""Shorter paragraphs (admonition titles, captions) are dropped when loading."""

# Index and table-of-contents pages are lists of links, not prose.
_SKIPPED_HTML_PAGES = frozenset({"genindex-all.html", "contents.html", "py-modindex.html", "search.html"})

# Tags inside which a <p> is not prose.
_SKIPPED_CONTAINERS = frozenset({"table", "pre", "nav", "script", "style"})

# Elements without an end tag, which must not be pushed on the open-element stack.
_VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class CorpusSplit:
    """Paragraphs of one corpus divided into train, validation and held-out lists.

    Each list keeps the order of the input paragraphs.
    """

    train: list[str]
    validation: list[str]
    heldout: list[str]


@dataclass(frozen=True)
class PromptExample:
    """One prompt and its reference continuation, cut from one paragraph.

    Attributes
    ----------
    prompt : str
        The first ``prompt_words`` words of the paragraph, joined by single spaces.
    reference : str
        The words after the prompt (all of them, or the next ``reference_words``).
    paragraph_id : int
        Index of the paragraph in the list given to :func:`make_prompt_examples`.
    """

    prompt: str
    reference: str
    paragraph_id: int


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace to one space and strip both ends."""
    return _WHITESPACE.sub(" ", text).strip()


def load_corpus_paragraphs(source: str = "python-docs", *, docs_dir: Path | None = None) -> list[str]:
    """Load the prose paragraphs of a corpus, deduplicated, in a deterministic order.

    Parameters
    ----------
    source : str
        ``"python-docs"`` or ``"pydoc"``; see the module docstring.
    docs_dir : Path or None
        HTML folder for ``"python-docs"``; defaults to :data:`PYTHON_DOCS_DIR`.

    Returns
    -------
    list of str
        Paragraphs with whitespace collapsed to single spaces, each of at least
        :data:`MIN_PARAGRAPH_WORDS` words, in file order (files sorted by path), keeping the first
        occurrence of repeated paragraphs.

    Raises
    ------
    ValueError
        If ``source`` is not one of :data:`CORPUS_SOURCES`.
    FileNotFoundError
        If ``source`` is ``"python-docs"`` and the HTML folder is missing.
    """
    if source == "pydoc":
        raw = _pydoc_paragraphs()
    elif source == "python-docs":
        raw = _python_docs_paragraphs(docs_dir or PYTHON_DOCS_DIR)
    else:
        raise ValueError(f"invalid corpus source {source!r}: use one of {', '.join(CORPUS_SOURCES)}")

    paragraphs = _deduplicate(p for p in map(normalize_whitespace, raw) if len(p.split()) >= MIN_PARAGRAPH_WORDS)
    logger.info("loaded %d paragraphs (%d words) from corpus %r", len(paragraphs), count_words(paragraphs), source)
    return paragraphs


def corpus_version(source: str) -> str:
    """Return the version of the package that provides a corpus source.

    For ``"python-docs"`` this is the Debian package version from ``dpkg-query``, or
    ``"unknown"`` where dpkg is not available; for ``"pydoc"`` it is the Python version.
    """
    if source == "pydoc":
        return sys.version.split()[0]
    if source != "python-docs":
        raise ValueError(f"invalid corpus source {source!r}: use one of {', '.join(CORPUS_SOURCES)}")

    try:
        completed = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", PYTHON_DOCS_PACKAGE],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("could not read the version of %s: %s", PYTHON_DOCS_PACKAGE, error)
        return "unknown"
    return completed.stdout.strip() or "unknown"


def count_words(paragraphs: list[str]) -> int:
    """Return the number of whitespace-separated words in all paragraphs."""
    return sum(len(p.split()) for p in paragraphs)


def split_name(paragraph: str) -> str:
    """Return the split (``"train"``, ``"validation"`` or ``"heldout"``) a paragraph belongs to.

    The first 8 bytes of the SHA-256 digest of the UTF-8 text, modulo 100, pick a bucket. Buckets
    are given to the splits in the proportions of :data:`SPLIT_PERCENT`, or of
    :data:`LONG_PARAGRAPH_SPLIT_PERCENT` for paragraphs of at least :data:`LONG_PARAGRAPH_WORDS`
    words.
    """
    bucket = int.from_bytes(hashlib.sha256(paragraph.encode("utf-8")).digest()[:8], "big") % 100
    is_long = len(paragraph.split()) >= LONG_PARAGRAPH_WORDS
    shares = LONG_PARAGRAPH_SPLIT_PERCENT if is_long else SPLIT_PERCENT

    upper = 0
    for name, percent in shares.items():
        upper += percent
        if bucket < upper:
            return name
    raise AssertionError(f"split shares must sum to 100, got {sum(shares.values())}")


def split_paragraphs(paragraphs: list[str]) -> CorpusSplit:
    """Divide paragraphs into train, validation and held-out lists by :func:`split_name`."""
    splits: dict[str, list[str]] = {name: [] for name in SPLIT_PERCENT}
    for paragraph in paragraphs:
        splits[split_name(paragraph)].append(paragraph)
    return CorpusSplit(train=splits["train"], validation=splits["validation"], heldout=splits["heldout"])


def write_heldout(
    paragraphs: list[str],
    out_dir: Path,
    *,
    source: str,
    max_bytes: int = 1_000_000,
    extra: dict[str, object] | None = None,
) -> Path:
    """Write held-out paragraphs, one per line, and a provenance JSON next to them.

    Parameters
    ----------
    paragraphs : list of str
        Held-out paragraphs; each must be a single line.
    out_dir : Path
        Folder to write :data:`HELDOUT_FILENAME` and :data:`PROVENANCE_FILENAME` into; created if
        missing.
    source : str
        Corpus source name, recorded with its package version.
    max_bytes : int
        Size limit of the text file in bytes. Paragraphs are written in order until the next one
        would pass the limit, and the provenance records how many were left out.
    extra : dict or None
        More fields for the provenance JSON (for example word counts of the other splits).

    Returns
    -------
    Path
        Path of the written text file.
    """
    if max_bytes <= 0:
        raise ValueError(f"invalid max_bytes {max_bytes}: must be a positive number of bytes")
    for index, paragraph in enumerate(paragraphs):
        if "\n" in paragraph or "\r" in paragraph:
            raise ValueError(f"held-out paragraph {index} contains a line break: normalize its whitespace first")

    written: list[str] = []
    size = 0
    for paragraph in paragraphs:
        line_bytes = len(paragraph.encode("utf-8")) + 1
        if size + line_bytes > max_bytes:
            break
        written.append(paragraph)
        size += line_bytes

    out_dir.mkdir(parents=True, exist_ok=True)
    text_path = out_dir / HELDOUT_FILENAME
    text_path.write_text("".join(p + "\n" for p in written), encoding="utf-8")

    provenance = {
        "source": source,
        "package": PYTHON_DOCS_PACKAGE if source == "python-docs" else "python (pydoc_data.topics)",
        "package_version": corpus_version(source),
        "split": "heldout",
        "split_percent": SPLIT_PERCENT,
        "long_paragraph_split_percent": LONG_PARAGRAPH_SPLIT_PERCENT,
        "paragraphs": len(written),
        "paragraphs_left_out_for_size": len(paragraphs) - len(written),
        "words": count_words(written),
        "long_paragraphs": sum(len(p.split()) >= LONG_PARAGRAPH_WORDS for p in written),
        "bytes": size,
        **(extra or {}),
    }
    (out_dir / PROVENANCE_FILENAME).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %d held-out paragraphs (%d bytes) to %s", len(written), size, text_path)
    return text_path


def load_heldout_paragraphs(path: Path | None = None) -> list[str]:
    """Read a held-out file written by :func:`write_heldout`.

    Parameters
    ----------
    path : Path or None
        Text file, or a folder containing :data:`HELDOUT_FILENAME`; defaults to the shipped
        ``delsim/llm/default/corpus/heldout.txt``.

    Returns
    -------
    list of str
        The non-empty lines of the file, in order.
    """
    path = Path(path) if path is not None else DEFAULT_CORPUS_DIR
    if path.is_dir():
        path = path / HELDOUT_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"held-out corpus file not found: {path}; write it with `delsim train lm` or reinstall delsim"
        )
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_prompt_examples(
    paragraphs: list[str],
    *,
    prompt_words: int = 50,
    min_words: int = 100,
    reference_words: int | None = None,
) -> list[PromptExample]:
    """Cut prompts and reference continuations from paragraphs.

    The DEL evaluation protocol takes the first 50 words of test paragraphs of at least 100 words
    as prompts, and the defaults follow it. Every paragraph of at least ``min_words`` words gives
    one example. Its prompt is the first ``prompt_words`` words, and its reference is the rest or
    the next ``reference_words`` words. Shorter paragraphs are skipped.

    Parameters
    ----------
    paragraphs : list of str
        Source paragraphs; words are split on whitespace.
    prompt_words : int
        Words in each prompt; at least 1.
    min_words : int
        Minimum words a paragraph needs to be used; more than ``prompt_words`` so that the
        reference is never empty.
    reference_words : int or None
        Maximum words in each reference; ``None`` keeps the whole rest of the paragraph.

    Returns
    -------
    list of PromptExample
        One example per usable paragraph, in input order.
    """
    if prompt_words < 1:
        raise ValueError(f"invalid prompt_words {prompt_words}: must be at least 1")
    if min_words <= prompt_words:
        raise ValueError(
            f"invalid min_words {min_words}: must exceed prompt_words ({prompt_words}) so every reference has a word"
        )
    if reference_words is not None and reference_words < 1:
        raise ValueError(f"invalid reference_words {reference_words}: must be at least 1, or None for the whole rest")

    examples = []
    for paragraph_id, paragraph in enumerate(paragraphs):
        words = paragraph.split()
        if len(words) < min_words:
            continue

        rest = words[prompt_words:]
        if reference_words is not None:
            rest = rest[:reference_words]
        examples.append(
            PromptExample(prompt=" ".join(words[:prompt_words]), reference=" ".join(rest), paragraph_id=paragraph_id)
        )
    return examples


def _deduplicate(paragraphs: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for paragraph in paragraphs:
        if paragraph not in seen:
            seen.add(paragraph)
            unique.append(paragraph)
    return unique


def _pydoc_paragraphs() -> list[str]:
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            if _is_pydoc_prose(textwrap.dedent(block).splitlines()):
                paragraphs.append(block)
    return paragraphs


def _is_pydoc_prose(lines: list[str]) -> bool:
    # Indented blocks contain both prose (method descriptions) and code samples. Prose lines share
    # one indentation and the block ends a sentence, while code has nested indentation, ">>>"
    # sessions or "::=" grammar rules.
    if not lines or not lines[-1].rstrip().endswith((".", ")", '"')):
        return False
    if any(line.startswith((" ", "\t")) for line in lines):
        return False
    if any(">>>" in line or "::=" in line for line in lines):
        return False
    # Underlines of reStructuredText headings.
    return not any(line.strip() and set(line.strip()) <= set("-=*~^") for line in lines)


def _python_docs_paragraphs(docs_dir: Path) -> list[str]:
    if not docs_dir.is_dir():
        raise FileNotFoundError(
            f"Python HTML documentation not found at {docs_dir}: install it with "
            f"`apt-get install -y {PYTHON_DOCS_PACKAGE}` as root, or use corpus source 'pydoc'"
        )

    paragraphs: list[str] = []
    pages = sorted(p for p in docs_dir.rglob("*.html") if p.name not in _SKIPPED_HTML_PAGES)
    for page in pages:
        relative = page.relative_to(docs_dir)
        if relative.parts[0].startswith("_"):
            continue
        parser = _ProseParagraphParser()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        parser.close()
        paragraphs.extend(parser.paragraphs)
    logger.debug("parsed %d HTML pages under %s", len(pages), docs_dir)
    return paragraphs


class _ProseParagraphParser(HTMLParser):
    """Collects the text of ``<p>`` elements inside the main body of a Sphinx HTML page.

    Text under tables, code blocks and navigation is skipped; inline code inside a paragraph is
    kept as text.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._stack: list[str] = []
        self._body_depth: int | None = None
        self._skip_depth = 0
        self._paragraph_parts: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID_ELEMENTS:
            return
        self._stack.append(tag)

        classes = (dict(attrs).get("class") or "").split()
        if tag == "div" and "body" in classes and self._body_depth is None:
            self._body_depth = len(self._stack)
        if tag in _SKIPPED_CONTAINERS or (tag == "div" and "highlight" in " ".join(classes)):
            self._skip_depth += 1
            self._stack[-1] = f"{tag}#skip"
        if tag == "p" and self._inside_body() and self._skip_depth == 0:
            self._paragraph_parts = []

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID_ELEMENTS or not any(entry.split("#")[0] == tag for entry in self._stack):
            return

        # Close every element left open inside this one, as browsers do.
        while self._stack:
            entry = self._stack.pop()
            name = entry.split("#")[0]
            if entry.endswith("#skip"):
                self._skip_depth -= 1
            if name == "p" and self._paragraph_parts is not None:
                self.paragraphs.append("".join(self._paragraph_parts).replace("¶", ""))
                self._paragraph_parts = None
            if self._body_depth is not None and len(self._stack) < self._body_depth:
                self._body_depth = None
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._paragraph_parts is not None and self._skip_depth == 0:
            self._paragraph_parts.append(data)

    def _inside_body(self) -> bool:
        return self._body_depth is not None and len(self._stack) >= self._body_depth
