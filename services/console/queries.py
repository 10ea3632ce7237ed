"""What the pages ask the store, on a read connection of their own (WAL: never waiting for the
follower's writes). Each answer costs a page's rows and index lookups, never a scan of every
report: counts come from the tallies where one facet is asked, lists from an index in the order
they are shown.
"""

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from services.console.filters import Filters
from services.console.model import FLOW, Letter, Report, refusal
from shared import topics

PAGE = 25
LETTERS_RECENT_S = 86400  # dead letters stay in the attention queue for a day (the page keeps all)
TOP = "\U0010ffff"  # after every character: `x <= name < x + TOP` is a prefix
# A filter keeping more reports than this is checked row by row along the sorted column's index
# rather than sorting all it keeps (queries.Queries.reports).
WALK = 20_000
T = TypeVar("T")


@dataclass(frozen=True)
class Paged(Generic[T]):
    rows: list[T]
    page: int  # the page shown (a page asked past the last shows the last)
    pages: int
    total: int
    asked: int  # the page asked for

    @property
    def clamped(self) -> bool:
        return self.asked != self.page


def paged(total: int, asked: int, fetch: Callable[[int, int], list[T]],
          size: int = PAGE) -> Paged[T]:
    pages = max(1, -(-total // size))
    page = min(max(1, asked), pages)
    return Paged(fetch(size, (page - 1) * size) if total else [], page, pages, total, asked)


@dataclass(frozen=True)
class Health:
    """One agency at a glance: what it was sent, what it answered, what waits on it."""

    agency_id: str
    referred: int = 0
    referrals_acked: int = 0
    amendments: int = 0
    corrections: int = 0
    acked: int = 0  # corrections acknowledged
    pending: int = 0
    overdue: int = 0
    escalated: int = 0  # escalated and still unacknowledged
    late: int = 0  # escalated, then acknowledged late
    outcomes: int = 0
    unacknowledged: int = 0  # referrals unacknowledged past the acknowledgement timeout
    last_ack_at: float | None = None
    refused: int = 0  # responses refused, ever
    refused_since: float | None = None  # the first refusal since its last good ack
    refused_lately: int = 0  # refusals since its last good ack
    refused_cause: str | None = None  # the latest refusal's
    next_due: tuple[float, str, str] | None = None  # (when, "re-send" or "escalation", report)

    @property
    def ack_rate(self) -> float | None:
        return self.referrals_acked / self.referred if self.referred else None

    @property
    def refusing(self) -> bool:
        """Its responses are refused and none was accepted since."""
        return self.refused_since is not None


@dataclass(frozen=True)
class Waiting:
    """A correction waiting on an agency, or escalated."""

    report_id: str
    agency_id: str
    priority: int
    since: float  # sent (pending) or escalated at
    last_sent_at: float | None
    resends: int
    state: str  # pending, escalated


@dataclass(frozen=True)
class Attention:
    """One row of the "needs attention" queue."""

    kind: str  # refused, escalated, overdue, unacknowledged, letters
    since: float
    agency_id: str | None = None
    report_id: str | None = None
    priority: int = -1
    count: int = 1
    detail: str = ""
    service: str | None = None


# Each kind of row, in the queue's order: its badge, and what the overview counts of it.
KINDS = {"refused": ("acks refused", "agencies whose acks are refused"),
         "escalated": ("correction escalated", "corrections escalated"),
         "overdue": ("correction overdue", "corrections overdue"),
         "unacknowledged": ("referrals unacknowledged",
                            "agencies with referrals unacknowledged"),
         "letters": ("dead letters", "dead-letter causes of the last day")}


@dataclass(frozen=True)
class Queue:
    """A page of the attention queue, and how many rows of each kind it holds."""

    page: Paged[Attention]
    counts: dict[str, int]


@dataclass(frozen=True)
class LetterRow:
    letter: Letter
    read_from: str  # where its record was read: the row's key on the page


@dataclass
class Queries:
    """The read side, bound to one connection and one moment."""

    db: sqlite3.Connection
    now: float
    ack_timeout_s: float
    max_resends: int
    _tallies: dict[str, dict[str, int]] = field(default_factory=dict)
    _health: dict[str, "Health"] = field(default_factory=dict)

    # --- counters -----------------------------------------------------------------------------

    def tally(self, name: str) -> int:
        row = self.db.execute("SELECT n FROM tallies WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def tallies(self, prefix: str) -> dict[str, int]:
        """Every counter named `prefix...`, by the rest of its name."""
        if prefix not in self._tallies:
            self._tallies[prefix] = {
                name[len(prefix):]: n for name, n in self.db.execute(
                    "SELECT name, n FROM tallies WHERE name >= ? AND name < ? AND n != 0",
                    (prefix, prefix + TOP))}
        return self._tallies[prefix]

    # --- reports ------------------------------------------------------------------------------

    def report(self, report_id: str) -> Report | None:
        row = self.db.execute("SELECT d.doc FROM reports r JOIN docs d ON d.seq = r.seq "
                              "WHERE r.report_id = ?", (report_id,)).fetchone()
        return Report.load(row[0]) if row else None

    def _docs(self, seqs: Sequence[int]) -> list[Report]:
        if not seqs:
            return []
        marks = ",".join("?" * len(seqs))
        docs = dict(self.db.execute(f"SELECT seq, doc FROM docs WHERE seq IN ({marks})", seqs))
        return [Report.load(docs[s]) for s in seqs if s in docs]

    def reports(self, f: Filters, asked: int) -> Paged[Report]:
        """Reports as `f` filters and sorts them (the default: newest first).

        Filtered by agency, the agency's rows of `tracks` answer (they carry the report's
        columns). Sorted by priority, a filter that keeps many reports is checked along the
        priority index instead of sorting all it keeps; each index holds every filtered column,
        so a page or a count never reads a row of the table."""
        facets = self._facets(f)
        walk = f.sort == "priority" and min(
            (self.tally(n) for n in facets if not n.startswith("a:")),
            default=self.tally(facets[0]) if facets else self.tally("reports")) > WALK
        if f.agency:
            seq, report_correction = "t.report", "t.report_correction"
            table = "tracks t" + (" INDEXED BY tracks_agency_priority" if walk else "")
            where, args = ["t.agency = ?"], list[Any]([f.agency])
            c = "t."
        else:
            seq, report_correction = "r.seq", "r.correction"
            table = "reports r" + (" INDEXED BY reports_priority" if walk else (
                "" if facets or f.narrowed else " INDEXED BY reports_time"))
            where, args = [], []
            c = "r."
        for column, value in (("state", f.state), ("esp", f.esp)):
            if value:
                where.append(f"{c}{column} = ?")
                args.append(value)
        if f.priority is not None:
            where.append(f"{c}priority = ?")
            args.append(f.priority)
        if f.correction == "overdue" and f.agency:  # overdue at that agency
            where.append("t.correction = 'pending' AND t.since < ?")
            args.append(self.now - self.ack_timeout_s)
        elif f.correction == "overdue":  # its oldest correction awaiting an ack
            where.append("r.waiting < ?")
            args.append(self.now - self.ack_timeout_s)
        elif f.correction:
            where.append(f"{report_correction} = ?")
            args.append(f.correction)
        since, until = f.window(self.now)
        if since is not None:
            where.append(f"{c}first >= ?")
            args.append(since)
        if until is not None:
            where.append(f"{c}first < ?")
            args.append(until)
        condition = " AND ".join(where) or "1"
        timed = f.last or f.since or f.until or f.correction == "overdue"
        total = self.tally(facets[0] if facets else "reports") if (
            len(facets) < 2 and not timed) else int(self.db.execute(
                f"SELECT count(*) FROM {table} WHERE {condition}", args).fetchone()[0])
        def order(desc: bool) -> str:
            way = "DESC" if desc else "ASC"
            return (f"{c}priority {way}, " if f.sort == "priority" else "") + (
                f"{c}first {way}, {seq} {way}")

        def fetch(limit: int, offset: int) -> list[Report]:
            desc = f.order == "desc"
            if offset > total // 2:  # a page past the middle: counted from the other end
                limit, offset = min(limit, total - offset), max(0, total - offset - limit)
                desc = not desc
            seqs = [s for (s,) in self.db.execute(
                f"SELECT {seq} FROM {table} WHERE {condition} ORDER BY {order(desc)} "
                "LIMIT ? OFFSET ?", (*args, limit, offset))]
            return self._docs(seqs if desc == (f.order == "desc") else seqs[::-1])

        return paged(total, asked, fetch)

    @staticmethod
    def _facets(f: Filters) -> list[str]:
        """The tallies that count what each of `f`'s filters keeps (no time, no overdue)."""
        return [name for name, chosen in (
            (f"state:{f.state}", f.state), (f"esp:{f.esp}", f.esp),
            (f"priority:{f.priority}", f.priority is not None),
            (f"correction:{f.correction}", f.correction not in ("", "overdue")),
            (f"a:{f.agency}:reports", f.agency)) if chosen]

    def find(self, prefix: str, asked: int) -> Paged[Report]:
        """Reports whose id starts with `prefix`, newest first (ids are time-ordered)."""
        bounds = (prefix, prefix + TOP)
        total = int(self.db.execute("SELECT count(*) FROM reports WHERE report_id >= ? AND "
                                    "report_id < ?", bounds).fetchone()[0])

        def fetch(limit: int, offset: int) -> list[Report]:
            return self._docs([s for (s,) in self.db.execute(
                "SELECT seq FROM reports WHERE report_id >= ? AND report_id < ? "
                "ORDER BY report_id DESC LIMIT ? OFFSET ?", (*bounds, limit, offset))])

        return paged(total, asked, fetch)

    def esps(self, prefix: str = "") -> dict[str, int]:
        """ESPs named `prefix...`, with their reports."""
        return {name: n for name, n in self.tallies("esp:").items() if name.startswith(prefix)}

    def by_esps(self, esps: dict[str, int], asked: int) -> Paged[Report]:
        """The reports of these ESPs, newest first."""
        names = sorted(esps)
        if not names:
            return paged(0, asked, lambda limit, offset: [])
        marks = ",".join("?" * len(names))
        p = "+" if sum(esps.values()) > WALK else ""  # many: along the time index

        def fetch(limit: int, offset: int) -> list[Report]:
            return self._docs([s for (s,) in self.db.execute(
                f"SELECT seq FROM reports WHERE {p}esp IN ({marks}) ORDER BY first DESC, "
                "seq DESC LIMIT ? OFFSET ?", (*names, limit, offset))])

        return paged(sum(esps.values()), asked, fetch)

    def triage(self, asked: int) -> Paged[tuple[str, float]]:
        """(report, accepted at): reports from the public waiting for an analyst, oldest
        first."""
        def fetch(limit: int, offset: int) -> list[tuple[str, float]]:
            return [(rid, since) for rid, since in self.db.execute(
                "SELECT report_id, triage FROM reports WHERE triage IS NOT NULL ORDER BY triage, "
                "seq LIMIT ? OFFSET ?", (limit, offset))]

        return paged(self.tally("triage"), asked, fetch)

    def chart(self, start: float, end: float, points: int = 60) -> list[tuple[float, list[int]]]:
        """(bucket start, counts of FLOW) over [start, end), in at most `points` buckets of
        whole minutes, oldest first."""
        first, last = int(start // 60), int(end // 60)
        width = max(1, -(-(last - first) // points))
        buckets = [[0] * len(FLOW) for _ in range(-(-(last - first) // width))]
        for minute, flow, n in self.db.execute(
                "SELECT minute, flow, n FROM minutes WHERE minute >= ? AND minute < ?",
                (first, last)):
            buckets[(minute - first) // width][flow] += n
        return [((first + i * width) * 60.0, counts) for i, counts in enumerate(buckets)]

    # --- agencies -----------------------------------------------------------------------------

    def health(self, agency_id: str) -> Health:
        if agency_id not in self._health:
            self._health[agency_id] = self._health_of(agency_id)
        return self._health[agency_id]

    def _health_of(self, agency_id: str) -> Health:
        counts = self.tallies(f"a:{agency_id}:")
        last_ack = self.db.execute("SELECT last_at FROM acks WHERE agency = ?",
                                   (agency_id,)).fetchone()
        last_ack_at = last_ack[0] if last_ack else None
        lately, since = self.db.execute(
            "SELECT count(*), min(failed_at) FROM letters WHERE agency = ? AND failed_at > ?",
            (agency_id, last_ack_at or 0)).fetchone()
        latest = self.db.execute("SELECT cause FROM letters WHERE agency = ? ORDER BY "
                                 "failed_at DESC LIMIT 1", (agency_id,)).fetchone()
        cutoff = self.now - self.ack_timeout_s
        overdue = self.db.execute(
            "SELECT count(*) FROM tracks WHERE agency = ? AND correction = 'pending' AND "
            "since < ?", (agency_id, cutoff)).fetchone()[0]
        unacknowledged = self.db.execute(
            "SELECT count(*) FROM tracks WHERE agency = ? AND referral_acked_at IS NULL AND "
            "referral_at < ?", (agency_id, cutoff)).fetchone()[0]
        due = self.db.execute(
            "SELECT t.last_sent_at, t.resends, r.report_id FROM tracks t JOIN reports r ON "
            "r.seq = t.report WHERE t.agency = ? AND t.correction = 'pending' AND "
            "t.last_sent_at IS NOT NULL ORDER BY t.last_sent_at LIMIT 1", (agency_id,)).fetchone()
        return Health(
            agency_id, referred=counts.get("referred", 0),
            referrals_acked=counts.get("referral_acked", 0),
            amendments=counts.get("amendments", 0), corrections=counts.get("corrections", 0),
            acked=counts.get("acked", 0), pending=counts.get("pending", 0), overdue=overdue,
            escalated=counts.get("escalated", 0), late=counts.get("late", 0),
            outcomes=counts.get("outcomes", 0), unacknowledged=unacknowledged,
            last_ack_at=last_ack_at, refused=self.tally(f"refused:{agency_id}"),
            refused_since=since if lately else None, refused_lately=lately,
            refused_cause=refusal(latest[0]) if latest else None,
            next_due=(due[0] + self.ack_timeout_s,
                      "escalation" if due[1] >= self.max_resends else "re-send", due[2])
            if due else None)

    def agencies(self) -> set[str]:
        """Every agency the topics told of."""
        return {name.split(":", 1)[0] for name in self.tallies("a:")} | {
            name for name in self.tallies("refused:")}

    def waiting(self, agency_id: str, state: str, asked: int) -> Paged[Waiting]:
        """An agency's corrections in `state` (pending: oldest first; escalated: newest
        first)."""
        total = self.tally(f"a:{agency_id}:{state}")
        way = "ASC" if state == "pending" else "DESC"

        def fetch(limit: int, offset: int) -> list[Waiting]:
            # The page's keys from the index alone, then their rows (never a row per skipped).
            return [Waiting(rid, agency, priority, since, last_sent, resends, state)
                    for rid, agency, priority, since, last_sent, resends in self.db.execute(
                "SELECT r.report_id, t.agency, t.priority, t.since, t.last_sent_at, t.resends "
                "FROM (SELECT report FROM tracks WHERE agency = ? AND correction = ? "
                f"ORDER BY since {way} LIMIT ? OFFSET ?) k JOIN tracks t ON t.report = k.report "
                f"AND t.agency = ? JOIN reports r ON r.seq = k.report ORDER BY t.since {way}",
                (agency_id, state, limit, offset, agency_id))]

        return paged(total, asked, fetch)

    def outcomes(self, agency_id: str, asked: int) -> Paged[tuple[float, str, str]]:
        """(at, report, outcome): each report's latest outcome from the agency, newest first."""
        total = self.tally(f"a:{agency_id}:outcomes")

        def fetch(limit: int, offset: int) -> list[tuple[float, str, str]]:
            return [tuple(row) for row in self.db.execute(  # type: ignore[misc]
                "SELECT t.outcome_at, r.report_id, t.outcome FROM (SELECT report FROM tracks "
                "WHERE agency = ? AND outcome IS NOT NULL ORDER BY outcome_at DESC LIMIT ? "
                "OFFSET ?) k JOIN tracks t ON t.report = k.report AND t.agency = ? JOIN reports r "
                "ON r.seq = k.report ORDER BY t.outcome_at DESC",
                (agency_id, limit, offset, agency_id))]

        return paged(total, asked, fetch)

    def backlog(self, agency_id: str, chunk: int = 1000) -> Iterator[Waiting]:
        """Everything waiting on an agency: corrections sent and unacknowledged or escalated,
        referrals unacknowledged; in report order, a chunk at a time."""
        after = -1
        while True:
            rows = self.db.execute(
                "SELECT t.report, r.report_id, t.priority, t.correction, t.since, "
                "t.last_sent_at, t.resends, t.referral_at, t.referral_acked_at FROM tracks t "
                "JOIN reports r ON r.seq = t.report WHERE t.agency = ? AND t.report > ? AND "
                "(t.correction IN ('pending', 'escalated') OR (t.referral_at IS NOT NULL AND "
                "t.referral_acked_at IS NULL)) ORDER BY t.report LIMIT ?",
                (agency_id, after, chunk)).fetchall()
            for (_, rid, priority, correction, since, last_sent, resends, referral_at,
                 referral_acked) in rows:
                if correction in ("pending", "escalated"):
                    yield Waiting(rid, agency_id, priority, since, last_sent, resends,
                                  "escalated" if correction == "escalated" else (
                                      "overdue" if since < self.now - self.ack_timeout_s
                                      else "pending"))
                if referral_at is not None and referral_acked is None:
                    yield Waiting(rid, agency_id, priority, referral_at, referral_at, 0,
                                  "referral unacknowledged")
            if len(rows) < chunk:
                return
            after = rows[-1][0]

    # --- dead letters -------------------------------------------------------------------------

    def letters(self, asked: int, service: str = "", cause: str = "", agency: str = "",
                size: int = PAGE) -> Paged[LetterRow]:
        where, args = list[str](), list[Any]()
        for column, value in (("service", service), ("agency", agency)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if cause:
            where.append("instr(lower(cause), lower(?)) > 0")
            args.append(cause)
        condition = " AND ".join(where) or "1"
        if cause or (service and agency):
            total = int(self.db.execute(f"SELECT count(*) FROM letters WHERE {condition}",
                                        args).fetchone()[0])
        else:
            total = self.tally(f"refused:{agency}" if agency else (
                f"letters:{service}" if service else "letters"))

        def fetch(limit: int, offset: int) -> list[LetterRow]:
            return [LetterRow(Letter(*row[:-1]), row[-1]) for row in self.db.execute(
                "SELECT failed_at, service, topic, partition, offset, key, cause, agency, "
                f"read_from FROM letters WHERE {condition} ORDER BY failed_at DESC, id DESC "
                "LIMIT ? OFFSET ?", (*args, limit, offset))]

        return paged(total, asked, fetch, size)

    def letter_counts(self) -> dict[tuple[str, str], int]:
        """Dead letters by (service, topic)."""
        return {tuple(k.split(":", 1)): n  # type: ignore[misc]
                for k, n in self.tallies("letters:").items() if ":" in k}

    # --- what needs attention -----------------------------------------------------------------

    def attention(self, agencies: Sequence[str], asked: int, kind: str = "",
                  size: int = PAGE) -> Queue:
        """One queue across agencies: acks refused, corrections escalated, corrections overdue,
        referrals unacknowledged past the timeout, recent dead letters; in that order, then by
        the report's priority (highest first) and age (oldest first)."""
        healths = [self.health(a) for a in agencies]
        small: dict[str, list[Attention]] = {
            "refused": sorted((Attention(
                "refused", h.refused_since or 0, h.agency_id, self._refused_report(h.agency_id),
                count=h.refused_lately, detail=h.refused_cause or "")
                for h in healths if h.refusing), key=lambda a: a.since),
            "unacknowledged": sorted((self._unacknowledged(h) for h in healths
                                      if h.unacknowledged), key=lambda a: a.since),
            "letters": self._recent_letters(),
        }
        cutoff = self.now - self.ack_timeout_s
        big: dict[str, tuple[str, tuple[Any, ...]]] = {
            "escalated": ("t.correction = 'escalated'", ()),
            "overdue": ("t.correction = 'pending' AND t.since < ?", (cutoff,)),
        }
        counts = {k: len(v) for k, v in small.items()}
        for name, (condition, args) in big.items():
            counts[name] = int(self.db.execute(f"SELECT count(*) FROM tracks t WHERE {condition}",
                                               args).fetchone()[0])

        def rows(name: str, limit: int, offset: int) -> list[Attention]:
            if name in small:
                return small[name][offset:offset + limit]
            condition, args = big[name]
            return [Attention(name, since, agency, rid, priority, detail=(
                f"re-sent {resends}x" if resends else "")) for rid, agency, priority, since,
                resends in self.db.execute(
                    "SELECT r.report_id, k.agency, k.priority, k.since, t.resends FROM (SELECT "
                    f"report, agency, priority, since FROM tracks t WHERE {condition} ORDER BY "
                    "t.correction, t.priority DESC, t.since LIMIT ? OFFSET ?) k JOIN tracks t ON "
                    "t.report = k.report AND t.agency = k.agency JOIN reports r ON "
                    "r.seq = k.report ORDER BY k.priority DESC, k.since",
                    (*args, limit, offset))]

        order = [k for k in KINDS if not kind or k == kind]

        def fetch(limit: int, offset: int) -> list[Attention]:
            out: list[Attention] = []
            for name in order:
                if offset >= counts[name]:
                    offset -= counts[name]
                    continue
                out += rows(name, limit - len(out), offset)
                offset = 0
                if len(out) >= limit:
                    break
            return out

        return Queue(paged(sum(counts[k] for k in order), asked, fetch, size), counts)

    def _refused_report(self, agency_id: str) -> str | None:
        row = self.db.execute("SELECT key FROM letters WHERE agency = ? ORDER BY failed_at DESC "
                              "LIMIT 1", (agency_id,)).fetchone()
        return row[0] if row else None

    def _unacknowledged(self, health: Health) -> Attention:
        oldest = self.db.execute(
            "SELECT r.report_id, t.referral_at, t.priority FROM tracks t JOIN reports r ON "
            "r.seq = t.report WHERE t.agency = ? AND t.referral_acked_at IS NULL AND "
            "t.referral_at IS NOT NULL ORDER BY t.referral_at LIMIT 1",
            (health.agency_id,)).fetchone()
        return Attention("unacknowledged", oldest[1], health.agency_id, oldest[0], oldest[2],
                         count=health.unacknowledged)

    def _recent_letters(self) -> list[Attention]:
        """Dead letters of the last day by service and cause (refused acks are their own
        rows)."""
        return [Attention("letters", first, None, key, count=n, detail=cause, service=service)
                for service, cause, n, first, key in self.db.execute(
                    "SELECT service, cause, count(*), min(failed_at), max(key) FROM letters "
                    "WHERE failed_at >= ? AND topic != ? GROUP BY service, cause ORDER BY "
                    "min(failed_at)", (self.now - LETTERS_RECENT_S, topics.AGENCY_ACKS))]

    # --- for alerting -------------------------------------------------------------------------

    def alerts(self) -> dict[str, dict[str, int]]:
        """Per agency: corrections overdue, pending and escalated, referrals unacknowledged past
        the timeout, responses refused (ever, and since the last accepted ack)."""
        return {agency: {"overdue": h.overdue, "pending": h.pending, "escalated": h.escalated,
                         "unacknowledged": h.unacknowledged, "refused": h.refused,
                         "refusing": h.refused_lately}
                for agency in sorted(self.agencies()) if (h := self.health(agency))}
