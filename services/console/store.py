"""The console's own store: its read model in SQLite under its data dir, with the offsets it has
consumed, both written in one transaction.

So a restart resumes from the checkpoint instead of replaying the topics, a crash loses at most
the last batches (read again from the older checkpoint: applying a record twice changes
nothing), and the memory is SQLite's bounded page cache and one batch, whatever the history's
size. Each copy of the console keeps its own file; a lock keeps a second process off it.

Tables: `reports` (one narrow row a report, indexed for every filter and sort) beside `docs`
(the whole `model.Report` as JSON), `tracks` (a row per report and agency, indexed for the
agency pages and the attention queue), `letters`, `tallies` (every counter a page shows, moved
by each change's difference: `Report.tallies`), `minutes` (the chart), `acks` (each agency's
last acknowledgement), `offsets` (the checkpoint). Nothing is ever deleted: a store of another
layout, or of another history, is moved aside, never erased.
"""

import fcntl
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from services.console.model import FLOW, Letter, Report, letter_of, moment, report_id_of
from shared.contracts import DeadLetter

log = logging.getLogger("tipline.console")

FILE = "console.db"
LAYOUT = 5  # bump when the tables change: an older file is moved aside and the model rebuilt
CACHE_KB = 8 * 1024  # SQLite's page cache, a connection (the OS caches the file too)
LOAD_CHUNK = 500  # report ids a query

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
  seq INTEGER PRIMARY KEY, report_id TEXT NOT NULL UNIQUE, esp TEXT, state TEXT NOT NULL,
  priority INTEGER NOT NULL, first REAL NOT NULL, correction TEXT, retraction TEXT,
  waiting REAL, triage REAL);
-- Each list's index holds every column a filter asks, so a page and a count read the index
-- alone, never a row of the table (at a million reports a row is a disk page away); the whole
-- list, newest first, pages along a narrow one.
CREATE INDEX IF NOT EXISTS reports_time ON reports (first);
CREATE INDEX IF NOT EXISTS reports_first ON reports (first, state, esp, priority, correction);
CREATE INDEX IF NOT EXISTS reports_state ON reports (state, first, esp, priority, correction);
CREATE INDEX IF NOT EXISTS reports_esp ON reports (esp, first, state, priority, correction);
CREATE INDEX IF NOT EXISTS reports_priority ON reports (priority, first, state, esp, correction);
CREATE INDEX IF NOT EXISTS reports_correction ON reports
  (correction, first, state, esp, priority);
CREATE INDEX IF NOT EXISTS reports_waiting ON reports (waiting, first, state, esp, priority)
  WHERE waiting IS NOT NULL;
-- Reports from the public waiting for an analyst, by when they were accepted (the triage page).
CREATE INDEX IF NOT EXISTS reports_triage ON reports (triage) WHERE triage IS NOT NULL;
CREATE TABLE IF NOT EXISTS docs (seq INTEGER PRIMARY KEY, doc BLOB NOT NULL);
-- A row per report and agency: the report's own columns again (the agency's lists filter on
-- them), then the agency's track.
CREATE TABLE IF NOT EXISTS tracks (
  report INTEGER NOT NULL, agency TEXT NOT NULL, priority INTEGER NOT NULL, first REAL NOT NULL,
  state TEXT NOT NULL, esp TEXT, report_correction TEXT,
  referral_at REAL, referral_acked_at REAL, correction TEXT, since REAL, last_sent_at REAL,
  resends INTEGER NOT NULL, outcome TEXT, outcome_at REAL,
  PRIMARY KEY (report, agency)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tracks_agency ON tracks
  (agency, first, state, esp, priority, report_correction);
CREATE INDEX IF NOT EXISTS tracks_agency_priority ON tracks
  (agency, priority, first, state, esp, report_correction);
CREATE INDEX IF NOT EXISTS tracks_attention ON tracks (correction, priority DESC, since);
CREATE INDEX IF NOT EXISTS tracks_agency_correction ON tracks (agency, correction, since);
CREATE INDEX IF NOT EXISTS tracks_due ON tracks (agency, last_sent_at)
  WHERE correction = 'pending';
CREATE INDEX IF NOT EXISTS tracks_unacked ON tracks (agency, referral_acked_at, referral_at);
CREATE INDEX IF NOT EXISTS tracks_outcomes ON tracks (agency, outcome_at)
  WHERE outcome IS NOT NULL;
CREATE TABLE IF NOT EXISTS letters (
  id INTEGER PRIMARY KEY, read_from TEXT NOT NULL UNIQUE, failed_at REAL NOT NULL,
  service TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
  offset INTEGER NOT NULL, key TEXT, cause TEXT NOT NULL, agency TEXT);
CREATE INDEX IF NOT EXISTS letters_at ON letters (failed_at);
CREATE INDEX IF NOT EXISTS letters_service ON letters (service, failed_at);
CREATE INDEX IF NOT EXISTS letters_agency ON letters (agency, failed_at) WHERE agency IS NOT NULL;
CREATE TABLE IF NOT EXISTS tallies (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minutes (
  minute INTEGER NOT NULL, flow INTEGER NOT NULL, n INTEGER NOT NULL,
  PRIMARY KEY (minute, flow)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acks (agency TEXT PRIMARY KEY, last_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (
  topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
  PRIMARY KEY (topic, partition)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Read:
    """One record as the follower read it: its event, or the console's own refusal of it."""

    topic: str
    partition: int
    offset: int
    event: BaseModel | None
    refused: Letter | None = None
    trace_id: str | None = None


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode={'ro' if readonly else 'rwc'}", uri=True,
                         check_same_thread=False, isolation_level=None)
    db.execute(f"PRAGMA cache_size = -{CACHE_KB}")
    db.execute("PRAGMA mmap_size = 0")  # a mapped file's pages would count as the process's
    db.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        db.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer
        db.execute("PRAGMA synchronous = NORMAL")  # a crash loses the last batches, not the file
    return db


class Locked(RuntimeError):
    """Another console process holds this data dir."""


class Store:
    """The file, its lock, and the one writer: `apply` a batch with its offsets."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = data_dir / FILE
        self._lock = (data_dir / "console.lock").open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(f"{data_dir} is held by another console process: each copy of the "
                         "console keeps its own TIPLINE_CONSOLE_DATA_DIR") from None
        self.version = 1  # moves with every change a page may show
        self.changed_at = time.time()
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path.exists():
            db = connect(self.path)
            layout = _meta(db, "layout")
            if layout == str(LAYOUT):
                return db
            db.close()
            self.set_aside(f"layout {layout}, not {LAYOUT}")
        db = connect(self.path)
        db.executescript(SCHEMA)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('layout', ?)", (str(LAYOUT),))
        return db

    def set_aside(self, why: str) -> None:
        """Move the file aside (never erase it) and start an empty one."""
        if getattr(self, "db", None) is not None:
            self.db.close()
        stamp, n = time.strftime("%Y%m%dT%H%M%S"), 0
        while (aside := self.path.with_name(f"{FILE}.{stamp}-{n}.aside")).exists():
            n += 1  # never over an earlier one
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, Path(f"{aside}{suffix}"))
        log.warning("console: store moved aside to %s (%s); rebuilding from the topics",
                    aside, why)
        self.db = self._open()
        self.version += 1

    def close(self) -> None:
        self.db.close()
        self._lock.close()

    def tune(self) -> None:
        """Give SQLite's planner fresh statistics once the store has doubled since it last had
        them (a sample of each index: milliseconds, whatever the size)."""
        row = self.db.execute("SELECT n FROM tallies WHERE name = 'reports'").fetchone()
        reports, analyzed = (row[0] if row else 0), int(_meta(self.db, "analyzed") or 0)
        if reports > max(2 * analyzed, 1000):
            self.db.execute("PRAGMA analysis_limit = 1000")
            self.db.execute("ANALYZE")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('analyzed', ?)", (str(reports),))

    def positions(self) -> dict[tuple[str, int], int]:
        """The checkpoint: the next offset to read, by (topic, partition)."""
        return {(t, p): n for t, p, n in self.db.execute("SELECT topic, partition, next "
                                                         "FROM offsets")}

    def apply(self, reads: Iterable[Read], positions: dict[tuple[str, int], int]) -> bool:
        """A batch of records and the offsets to go on from, in one transaction; whether
        anything a page shows changed. `reads` are taken a chunk at a time (their reports
        loaded together), so a batch's decoded records are never all in memory at once."""
        known: dict[str, tuple[int | None, Report]] = {}
        before: dict[str, Before] = {}
        dirty: set[str] = set()
        flows: Counter[tuple[int, int]] = Counter()
        acks: dict[str, float] = {}
        letters: list[tuple[str, Letter]] = []
        for chunk in _chunks(reads, LOAD_CHUNK):
            ids = {rid for r in chunk if r.event is not None
                   and (rid := report_id_of(r.event)) and rid not in known}
            for rid, (seq, report) in self._load(ids).items():
                known[rid], before[rid] = (seq, report), Before.of(seq, report)
            for read in chunk:
                event = read.event
                if read.refused is not None:
                    letters.append((f"console:{read.topic}[{read.partition}]@{read.offset}",
                                    read.refused))
                    continue
                if isinstance(event, DeadLetter):
                    letters.append((f"{read.topic}[{read.partition}]@{read.offset}",
                                    letter_of(event)))
                    continue
                rid = report_id_of(event) if event is not None else None
                if event is None or rid is None:
                    continue
                if rid not in known:
                    known[rid] = (None, Report(rid, moment(event)))
                    before[rid] = Before(Counter(), None, {})
                report = known[rid][1]
                happened = report.apply(event)
                if read.trace_id and report.trace_id is None:
                    report.trace_id = read.trace_id
                    dirty.add(rid)
                if happened is None:
                    continue
                dirty.add(rid)
                for what, at, agency in happened:
                    if what == "ack" and agency is not None:
                        acks[agency] = max(acks.get(agency, at), at)
                    elif what in FLOW:
                        flows[(int(at // 60), FLOW.index(what))] += 1
        changed = self._write([known[r] for r in dirty], before, letters, flows, acks,
                              positions)
        if changed:
            self.version += 1
            self.changed_at = time.time()
        return changed

    def _load(self, ids: Iterable[str]) -> dict[str, tuple[int | None, Report]]:
        wanted, found = list(ids), {}
        for start in range(0, len(wanted), LOAD_CHUNK):
            chunk = wanted[start:start + LOAD_CHUNK]
            marks = ",".join("?" * len(chunk))
            for seq, doc in self.db.execute(
                    f"SELECT r.seq, d.doc FROM reports r JOIN docs d ON d.seq = r.seq "
                    f"WHERE r.report_id IN ({marks})", chunk):
                report = Report.load(doc)
                found[report.report_id] = (seq, report)
        return found

    def _write(self, reports: list[tuple[int | None, Report]], before: dict[str, "Before"],
               letters: list[tuple[str, Letter]], flows: Counter[tuple[int, int]],
               acks: dict[str, float], positions: dict[tuple[str, int], int]) -> bool:
        db, delta = self.db, Counter[str]()
        db.execute("BEGIN IMMEDIATE")
        try:
            for seq, report in reports:
                was = before[report.report_id]
                self._save(seq, report, was)
                delta.update(report.tallies())
                delta.subtract(was.tallies)
            for read_from, x in letters:
                if db.execute(
                        "INSERT OR IGNORE INTO letters (read_from, failed_at, service, topic, "
                        "partition, offset, key, cause, agency) VALUES (?,?,?,?,?,?,?,?,?)",
                        (read_from, x.failed_at, x.service, x.topic, x.partition, x.offset,
                         x.key, x.cause, x.agency)).rowcount:
                    delta.update({"letters": 1, f"letters:{x.service}": 1,
                                  f"letters:{x.service}:{x.topic}": 1})
                    if x.agency:
                        delta[f"refused:{x.agency}"] += 1
            db.executemany("INSERT INTO tallies VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                           "n = n + excluded.n", [(k, n) for k, n in delta.items() if n])
            db.executemany("INSERT INTO minutes VALUES (?, ?, ?) ON CONFLICT (minute, flow) "
                           "DO UPDATE SET n = n + excluded.n",
                           [(m, f, n) for (m, f), n in flows.items()])
            db.executemany("INSERT INTO acks VALUES (?, ?) ON CONFLICT (agency) DO UPDATE SET "
                           "last_at = max(last_at, excluded.last_at)", acks.items())
            db.executemany("INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                           "DO UPDATE SET next = max(next, excluded.next)",
                           [(t, p, n) for (t, p), n in positions.items()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return bool(reports) or delta["letters"] > 0

    def _save(self, seq: int | None, report: Report, was: "Before") -> None:
        """The report's rows: its doc, and its row and tracks where they changed (an unchanged
        row's indexes are left alone)."""
        db, columns = self.db, _columns(report)
        if seq is None:
            seq = int(db.execute(
                "INSERT INTO reports (report_id, esp, state, priority, first, correction, "
                "retraction, waiting, triage) VALUES (?,?,?,?,?,?,?,?,?) RETURNING seq",
                (report.report_id, *columns)).fetchone()[0])
        elif was.columns != columns:
            db.execute("UPDATE reports SET esp = ?, state = ?, priority = ?, first = ?, "
                       "correction = ?, retraction = ?, waiting = ?, triage = ? WHERE seq = ?",
                       (*columns, seq))
        db.execute("INSERT OR REPLACE INTO docs VALUES (?, ?)", (seq, report.dump()))
        changed = [row for agency, row in _tracks(seq, report, columns).items()
                   if was.tracks.get(agency) != row]
        if changed:
            db.executemany("INSERT OR REPLACE INTO tracks VALUES "
                           "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", changed)


@dataclass(frozen=True)
class Before:
    """A report as loaded, before the batch: what it counted, its row, its tracks' rows."""

    tallies: Counter[str]
    columns: tuple[object, ...] | None
    tracks: dict[str, tuple[object, ...]]

    @classmethod
    def of(cls, seq: int | None, report: Report) -> "Before":
        columns = _columns(report)
        return cls(report.tallies(), columns, _tracks(seq or 0, report, columns))


def _columns(report: Report) -> tuple[object, ...]:
    """The report's row in `reports` (after its id)."""
    return (report.esp, report.state, report.priority if report.priority is not None else -1,
            report.first, report.correction(), report.retraction_state() or None,
            report.waiting_since(), report.triage_since())


def _tracks(seq: int, report: Report,
            columns: tuple[object, ...]) -> dict[str, tuple[object, ...]]:
    """Its rows in `tracks`, by agency: the report's columns again, then the agency's track."""
    esp, state, priority, first, correction, *_ = columns
    return {agency: (seq, agency, priority, first, state, esp, correction, t.referral_at,
                     t.referral_acked_at, t.correction(), t.since(), t.last_sent_at, t.resends,
                     t.outcome, t.outcome_at) for agency, t in report.agencies.items()}


def _chunks(items: Iterable[Read], size: int) -> Iterator[list[Read]]:
    chunk: list[Read] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _meta(db: sqlite3.Connection, name: str) -> str | None:
    try:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else None
