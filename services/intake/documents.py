"""The /ispws documents: safe parsing, schema validation with plain reasons, JSON twins.

XML is parsed twice on purpose: defusedxml first refuses DTDs, entity declarations and external
references (before anything can expand), then lxml parses the now-safe text with line numbers
and validates it against our schema (ispws.xsd). A JSON body is the same document spelled as
JSON (see `from_json`), turned into XML and validated by the same schema, so both spellings obey
one set of rules.
"""

import json
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from lxml import etree

from shared.contracts import FieldError

XSD_PATH = Path(__file__).with_name("ispws.xsd")
# Schema errors listed in an answer: each costs a look through the document, and a client fixes
# the first few before it needs the rest.
MAX_ERRORS = 50
# More errors than this while parsing: a flood, explained from its first WINDOW elements.
FLOOD = 2 * MAX_ERRORS
WINDOW = 10_000
SCHEMA_ERRORS = etree.ErrorDomains.SCHEMASV
XS = "{http://www.w3.org/2001/XMLSchema}"

Data = dict[str, Any]


class MalformedDocument(Exception):
    """Not well-formed XML (or JSON), or forbidden constructs such as a DTD: code 4110."""


class InvalidDocument(Exception):
    """Well-formed but not valid against the schema: code 4100, with every error."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.reason}" for e in errors))
        self.errors = errors


_per_thread = threading.local()


def schema() -> etree.XMLSchema:
    """The schema, one a thread: a validator keeps the errors of its last run, so two threads
    validating with one would read each other's."""
    if not hasattr(_per_thread, "schema"):
        _per_thread.schema = etree.XMLSchema(etree.parse(str(XSD_PATH)))
    return _per_thread.schema  # type: ignore[no-any-return]


def xsd_text() -> bytes:
    return XSD_PATH.read_bytes()


@cache
def child_order() -> dict[str, list[str]]:
    """Element name -> the names of its child elements, in schema order (for plain reasons)."""
    tree = etree.parse(str(XSD_PATH)).getroot()
    types = {t.get("name"): t for t in tree.iter(f"{XS}complexType") if t.get("name")}
    groups = {g.get("name"): g for g in tree.iter(f"{XS}group") if g.get("name")}

    def children(node: Any) -> Iterator[str]:
        for sub in node:
            if not isinstance(sub.tag, str):
                continue
            if sub.tag == f"{XS}element":
                yield sub.get("name")
            elif sub.tag == f"{XS}group" and sub.get("ref") in groups:
                yield from children(groups[sub.get("ref")])
            elif sub.tag != f"{XS}complexType" or sub is node:
                yield from children(sub)

    order: dict[str, list[str]] = {}
    for element in tree.iter(f"{XS}element"):
        body = element.find(f"{XS}complexType")
        if body is None and element.get("type") in types:
            body = types[element.get("type")]
        if body is not None:
            names = order.setdefault(element.get("name"), [])
            names.extend(n for n in children(body) if n not in names)
    return order


def parse(body: bytes, root: str) -> etree._Element:
    """A safe, schema-valid document whose root is `root`, or MalformedDocument/InvalidDocument.
    Linear in the document, however many errors it holds (see `_errors`)."""
    try:
        safety = DefusedXMLParser(target=_Nothing(), forbid_dtd=True, forbid_entities=True,
                                  forbid_external=True)
        safety.feed(body)
        safety.close()
    except DefusedXmlException as exc:
        refused = type(exc).__name__
        raise MalformedDocument(f"refused: {refused} (DTDs and entities are not allowed)") from None
    except (safe_xml.ParseError, ValueError, LookupError) as exc:  # LookupError: bad encoding
        raise MalformedDocument(f"not well-formed XML: {exc}") from None
    try:
        # Validated as it is parsed: no tree walk and no element paths, so an error costs little.
        doc, stream = _parsed(body, schema()), []
    except _Invalid as exc:
        doc, stream = _parsed(body), exc.errors
    if doc.tag != root:
        raise InvalidDocument(
            [FieldError(path=str(doc.tag), reason=f"the document must be a <{root}>",
                        line=doc.sourceline, column=1)]
        )
    if stream:
        raise InvalidDocument(_errors(body, doc, stream))
    return doc


class _Nothing:
    """What the safety check builds: nothing (expat's verdict is all it needs; a tree of a
    flood's elements in Python cost more than all the rest)."""

    def close(self) -> None:
        return None


class _Invalid(Exception):
    def __init__(self, errors: list[Any]) -> None:
        self.errors = errors


def _parsed(body: bytes, validator: etree.XMLSchema | None = None) -> etree._Element:
    """The document; _Invalid with every schema error met while parsing it, MalformedDocument
    when it is not well-formed."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, schema=validator)
    try:
        return etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        # The parser's own log holds this parse's errors, every one (the exception's is the
        # thread's, a hundred at most, from earlier parses too).
        errors = list(parser.error_log)
        if validator is None or any(e.domain != SCHEMA_ERRORS for e in errors):
            raise MalformedDocument(f"not well-formed XML: {exc}") from None
        raise _Invalid(errors) from None
    except (ValueError, LookupError) as exc:
        raise MalformedDocument(f"not well-formed XML: {exc}") from None


def _errors(body: bytes, doc: etree._Element, stream: list[Any]) -> list[FieldError]:
    """The first MAX_ERRORS schema errors with path, line and column, which only validating the
    tree gives: each error there costs a walk along its elements' siblings (libxml2 names an
    element by its place among them), so 100,000 errors among 100,000 siblings took a minute.
    With few errors in the stream (the parse above), the whole tree is validated; with a flood,
    its first WINDOW elements only, and what the flood holds past them is told by its count."""
    validator = schema()
    cut = _cut(doc, WINDOW) if len(stream) > FLOOD else set()  # doc is this call's own tree
    validator.validate(doc)
    log = [e for e in validator.error_log if not (cut and _cut_short(doc, cut, e))]
    # Past the window (a flood behind a clean start): the stream's words, without a place.
    shown = log[:MAX_ERRORS] or stream[:MAX_ERRORS]
    where = _Where.of(doc, body)  # once, for every error's line and column
    errors = [_explain(doc, where, e) for e in shown]
    if len(stream) > len(shown):
        errors.append(FieldError(path="", reason=f"... and {len(stream) - len(shown)} more "
                                 "errors like these, not listed"))
    return errors


def _cut(doc: etree._Element, keep: int) -> set[etree._Element]:
    """Keep the first `keep` elements (document order) and drop the rest; the elements the cut
    left without their later children."""
    dropped = next(islice(doc.iter(etree.Element), keep, None), None)
    cut: set[etree._Element] = set()
    child, parent = dropped, dropped.getparent() if dropped is not None else None
    first = True
    while parent is not None and child is not None:
        at = parent.index(child)
        del parent[at if first else at + 1:]
        cut.add(parent)
        child, parent, first = parent, parent.getparent(), False
    return cut


def _cut_short(doc: etree._Element, cut: set[etree._Element], error: Any) -> bool:
    """An error the cut made: a child missing from an element whose later children it dropped."""
    return bool(_MISSING.match(error.message.strip())) and _find(doc, error.path) in cut


_NOT_EXPECTED = re.compile(r"Element '([^']+)': This element is not expected\. Expected is (.*)\.$")
_MISSING = re.compile(r"Element '([^']+)': Missing child element\(s\)\. Expected is (.*)\.$")
_ELEMENT = re.compile(r"^Element '([^']+)'(?:, attribute '([^']+)')?: ")


def _expected(text: str) -> str:
    names = re.findall(r"[A-Za-z][\w.-]*", text.replace("one of", ""))
    return " or ".join(f"<{n}>" for n in names) or text


def _explain(doc: etree._Element, where: "_Where", error: Any) -> FieldError:
    """One schema error in plain words, with the element's path, line and column."""
    message: str = error.message.strip()
    path = (error.path or "").lstrip("/")
    element = _find(doc, error.path)
    line = error.line or (element.sourceline if element is not None else None)
    column = where.column(element) if element is not None else None
    if m := _NOT_EXPECTED.match(message):
        name, parent = m.group(1), path.rsplit("/", 2)[-2] if "/" in path else doc.tag
        known = child_order().get(parent, [])
        expected = _expected(m.group(2))
        if name in known:
            reason = f"<{name}> is out of order (or repeated too often): expected {expected} here"
        else:
            reason = f"<{name}> is not allowed here: expected {expected}"
    elif "[facet 'pattern']" in message and "(Z|" in message:
        reason = f"<{element.tag if element is not None else path}> must be an ISO 8601 " \
                 "date-time with a time zone (Z or +hh:mm), such as 2024-05-01T10:00:00Z"
    elif m := _MISSING.match(message):
        reason = f"<{m.group(1)}> is missing required element {_expected(m.group(2))}"
    else:
        reason = _ELEMENT.sub(
            lambda m: f"<{m.group(1)}>" + (f" attribute {m.group(2)}" if m.group(2) else "") + ": ",
            message,
        )
    return FieldError(path=_relative(path), reason=reason, line=line, column=column)


def _relative(path: str) -> str:
    # Paths are relative to the root, like the rules' paths: incidentSummary/incidentType.
    parts = path.split("/")
    return "/".join(parts[1:]) if len(parts) > 1 else path


def _find(doc: etree._Element, path: str | None) -> etree._Element | None:
    if not path:
        return None
    try:
        found = doc.getroottree().xpath(path)
    except etree.XPathError:
        return None
    return found[0] if isinstance(found, list) and found else None


@dataclass(frozen=True)
class _Where:
    """The document's lines and the elements that start on each: built once, so explaining an
    error costs no walk through the whole document."""

    lines: list[str]
    on_line: dict[int, list[etree._Element]]

    @classmethod
    def of(cls, doc: etree._Element, body: bytes) -> "_Where":
        on_line: dict[int, list[etree._Element]] = defaultdict(list)
        for element in doc.iter():
            if isinstance(element.tag, str) and element.sourceline:
                on_line[element.sourceline].append(element)
        return cls(body.decode("utf-8", "replace").splitlines(), on_line)

    def column(self, element: etree._Element) -> int | None:
        """1-based column of the element's start tag (libxml2 reports lines only)."""
        line_no = element.sourceline
        if not line_no or line_no > len(self.lines):
            return None
        nth = 0  # start tags of its name before it on its line (a line may hold a whole flood)
        for other in self.on_line.get(line_no, ()):
            if other == element:
                break
            nth += other.tag == element.tag
        tag = re.compile(rf"<{re.escape(element.tag)}[\s/>]")
        found = next(islice(tag.finditer(self.lines[line_no - 1]), nth, None), None)
        return found.start() + 1 if found else None


# --- Documents as data (JSON) ---------------------------------------------------------------


def to_data(element: etree._Element) -> Any:
    """An element as JSON-ready data: attributes as "@name", text as "#text", repeats as lists."""
    out: Data = {f"@{k}": v for k, v in element.attrib.items()}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        value = to_data(child)
        if child.tag in out:
            if not isinstance(out[child.tag], list):
                out[child.tag] = [out[child.tag]]
            out[child.tag].append(value)
        else:
            out[child.tag] = value
    text = (element.text or "").strip()
    if len(element):
        return out
    if out:
        if text:
            out["#text"] = text
        return out
    return text if text or element.text else None


def from_json(data: Any, root: str) -> bytes:
    """The XML spelling of a JSON document ({root: {...}} or the root's content itself)."""
    if isinstance(data, dict) and set(data) == {root}:
        data = data[root]
    if not isinstance(data, dict):
        raise MalformedDocument(f"a JSON <{root}> must be an object of its elements")
    element = etree.Element(root)
    try:
        _fill(element, data)
    except ValueError as exc:  # lxml refuses what XML cannot hold
        raise MalformedDocument(f"not representable as XML: {exc}") from None
    return etree.tostring(element, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _fill(element: etree._Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            if not isinstance(key, str) or not key:
                raise MalformedDocument("JSON keys must be element names")
            if key.startswith("@"):
                element.set(_name(key[1:]), _scalar(sub))
            elif key == "#text":
                element.text = _scalar(sub)
            else:
                for item in sub if isinstance(sub, list) else [sub]:
                    _fill(etree.SubElement(element, _name(key)), item)
    elif value is not None:
        element.text = _scalar(value)


def _name(key: str) -> str:
    # Our schema's names are ASCII; anything else is not one of its elements anyway.
    if not re.fullmatch(r"[A-Za-z_][\w.-]{0,100}", key, flags=re.ASCII):
        raise MalformedDocument(f"not an element or attribute name: {key[:40]!r}")
    return key


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        text = str(value)
        if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
            raise MalformedDocument("control characters are not allowed in XML text")
        return text
    raise MalformedDocument(f"not a text value: {type(value).__name__}")


def to_data_of(doc: etree._Element) -> Data:
    """A valid document's root as data (always an object)."""
    data = to_data(doc)
    return data if isinstance(data, dict) else {}


def read(body: bytes, kind: str, root: str) -> Data:
    """A <root> document (XML, or JSON when `kind` says so) as data, or MalformedDocument /
    InvalidDocument. CPU-bound on large documents: run it off the event loop."""
    if kind == "application/json":
        try:
            body = from_json(json.loads(body), root)
        except (ValueError, RecursionError) as exc:
            raise MalformedDocument(f"not well-formed JSON: {exc}") from None
    return to_data_of(parse(body, root))
