"""What a list shows, read from its URL and written back to it, so a view can be shared.

Pure: `Filters.parse(query, now)` refuses a value it does not know with the reason
(`BadFilter`, a 400 with it), and `Filters.query()` gives the parameters that make the same
view again. Time is UTC: a time without a zone is read as UTC.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime

from services.console.model import CORRECTIONS, PRIORITIES, STATES

SORTS = {"first": "first seen", "priority": "priority"}
LAST = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
MAX_TEXT = 200


class BadFilter(ValueError):
    """A filter value the console does not know; the message says which and why."""


@dataclass(frozen=True)
class Filters:
    state: str = ""
    correction: str = ""  # a class of model.CORRECTIONS, or "overdue"
    agency: str = ""
    esp: str = ""
    priority: int | None = None
    last: str = ""  # a key of LAST: the last hour ... (relative to now)
    since: datetime | None = None  # first seen at or after
    until: datetime | None = None  # first seen before
    sort: str = "first"
    order: str = "desc"

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> "Filters":
        state = _choice(query, "state", STATES)
        correction = _choice(query, "correction", (*CORRECTIONS, "overdue"))
        priority = _choice(query, "priority", tuple(PRIORITIES.values()))
        last = _choice(query, "last", tuple(LAST))
        since, until = _time(query, "since"), _time(query, "until")
        if since and until and since >= until:
            raise BadFilter("since must be before until")
        return cls(
            state=state, correction=correction, agency=_text(query, "agency"),
            esp=_text(query, "esp"),
            priority=next((n for n, name in PRIORITIES.items() if name == priority), None),
            last=last, since=since, until=until,
            sort=_choice(query, "sort", tuple(SORTS)) or "first",
            order=_choice(query, "order", ("asc", "desc")) or "desc")

    def window(self, now: float) -> tuple[float | None, float | None]:
        """The time range as timestamps (`last` is relative to now)."""
        if self.last:
            return now - LAST[self.last], None
        return (self.since.timestamp() if self.since else None,
                self.until.timestamp() if self.until else None)

    def query(self, **changes: object) -> dict[str, str]:
        """The URL parameters of this view (with `changes`), defaults left out."""
        chosen = replace(self, **changes)  # type: ignore[arg-type]
        out = {}
        for f in fields(chosen):
            value = getattr(chosen, f.name)
            if value in (None, "") or value == f.default:
                continue
            if f.name == "priority":
                value = PRIORITIES[int(value)]  # type: ignore[call-overload]
            elif isinstance(value, datetime):
                value = value.strftime("%Y-%m-%dT%H:%M")
            out[f.name] = str(value)
        return out

    @property
    def narrowed(self) -> bool:
        """Whether anything but the order is chosen."""
        return bool(self.query(sort="first", order="desc"))


def page_of(query: Mapping[str, str], name: str = "page") -> int:
    """A page number from the URL (from 1); a page past the last is shown as the last."""
    text = query.get(name, "").strip()
    if not text:
        return 1
    if not re.fullmatch(r"-?\d{1,9}", text):
        raise BadFilter(f"{name} must be a page number, not {text[:20]!r}")
    return max(1, int(text))


def _text(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "").strip()
    if len(value) > MAX_TEXT:
        raise BadFilter(f"{name} is longer than {MAX_TEXT} characters")
    return value


def _choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = _text(query, name)
    if value and value not in allowed:
        raise BadFilter(f"{name} must be one of {', '.join(allowed)}; not {value[:40]!r}")
    return value


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    value = _text(query, name)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadFilter(f"{name} must be a time like 2026-05-01T19:30 (UTC), not "
                        f"{value[:40]!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
