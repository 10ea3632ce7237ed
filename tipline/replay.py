"""Replaying an event stream against a running stack, then checking what agencies got.

Actions are dispatched at a fixed rate, at the recorded pace, or as fast as possible, never more
than `concurrency` at once. A refused connection or a 5xx is retried with a pause (the client an
ESP should write); a 4xx is final. While it runs, a NoticeWatch sees every notice agencies get;
at the end the replay waits until the system is quiet and compares with its own ground truth.
"""

import asyncio
import contextlib
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.supplementation.jurisdiction import load_rules, resolve
from shared.contracts import Report
from shared.settings import Settings
from tipline.watch import NoticeWatch

REPLAYABLE = frozenset({"submit", "retract"})
NOT_YET = {
    "open": "the /ispws API (open/finish) is not replayed yet",
    "amend": "analyst amendments have no API to replay yet",
}


@dataclass
class Case:
    """One report of the stream: what was sent, what tipline answered, what should follow."""

    ref: str
    esp_id: str
    expect: str
    agencies: frozenset[str]
    report_id: str | None = None
    accepted_at: float | None = None
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    referred: asyncio.Event = field(default_factory=asyncio.Event)
    retract_when: str | None = None
    retract_accepted_at: float | None = None


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max in milliseconds (nearest rank)."""
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 2)

    return {"count": len(ordered), "p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99),
            "max": round(ordered[-1] * 1000, 2)}


def schedule(
    stream: list[dict[str, Any]], rate: str, duration: float | None
) -> list[tuple[float, dict[str, Any]]]:
    """(send at, action) pairs. With a duration the stream is repeated (refs get a cycle mark)."""
    out: list[tuple[float, dict[str, Any]]] = []
    cycle = 0
    offset = 0.0
    while True:
        for i, event in enumerate(stream):
            if rate == "recorded":
                at = offset + float(event["t"])
            elif rate == "max":
                at = 0.0
            else:
                at = (len(out)) / float(rate)
            if duration is not None and at >= duration:
                return out
            if cycle:
                event = {**event, "ref": f"{event['ref']}#{cycle}"}
                if "duplicate_of" in event:
                    event["duplicate_of"] = f"{event['duplicate_of']}#{cycle}"
            out.append((at, event))
            if duration is None and i == len(stream) - 1:
                return out
        if duration is None or not stream or rate == "max":
            return out
        cycle += 1
        offset = out[-1][0] + 0.001


POOL_SIZE = 8  # connections of one HTTP client


class Replay:
    def __init__(
        self, settings: Settings, base_url: str, logins: dict[str, str], *,
        concurrency: int = 64, retry_for: float = 30.0, after_referral_timeout: float = 60.0,
        agencies: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = base_url
        self.logins = logins  # each ESP's password, for HTTP Basic
        self.routing = load_rules(settings.tipline_routing_file)
        self.concurrency = concurrency
        self.retry_for = retry_for
        self.after_referral_timeout = after_referral_timeout
        self.cases: dict[str, Case] = {}
        self.by_report: dict[str, Case] = {}
        self.errors: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.late = 0
        # Only the agencies the stream can reach need watching: every watched partition is
        # fetched every few milliseconds, and that load lands on the broker under test.
        self.watch = NoticeWatch(settings, agencies or [a.id for a in self.routing.agencies])
        self.watch.on_notice = self._on_notice
        self.started = 0.0
        self.dispatch_seconds = 0.0

    def _on_notice(self, report_id: str) -> None:
        case = self.by_report.get(report_id)
        if case and not case.referred.is_set():
            got = self.watch.reports[report_id].referrals
            if case.agencies <= got.keys():
                case.referred.set()

    def _login(self, esp_id: str) -> tuple[str, str]:
        return esp_id, self.logins[esp_id]

    async def _post(self, http: httpx.AsyncClient, path: str, **kw: Any) -> httpx.Response | None:
        """POST with retries for what a retry can fix; None when it never succeeded."""
        deadline = time.monotonic() + self.retry_for
        pause = 0.05
        while True:
            try:
                response = await http.post(path, **kw)
                if response.status_code < 500:
                    if response.status_code >= 400:
                        self.errors[f"http {response.status_code}"] += 1
                    return response
                self.errors[f"http {response.status_code}"] += 1
            except httpx.TransportError as exc:
                self.errors[type(exc).__name__] += 1
            if time.monotonic() > deadline:
                self.errors["gave up"] += 1
                return None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _submit(self, http: httpx.AsyncClient, event: dict[str, Any]) -> None:
        report = Report.model_validate(event["report"])
        case = Case(event["ref"], event["esp_id"], event.get("expect", "referred"),
                    frozenset(resolve("?", report, self.routing).agencies))
        self.cases[case.ref] = case
        response = await self._post(http, "/v1/reports", json={"report": event["report"]},
                                    auth=self._login(case.esp_id))
        if response is not None and response.status_code == 202:
            case.report_id = response.json()["report_id"]
            case.accepted_at = time.monotonic()
            self.by_report[case.report_id] = case
            self._on_notice(case.report_id)
        elif response is not None and response.status_code == 422 and case.expect == "rejected":
            case.expect = "refused at intake"
        case.accepted.set()

    async def _retract(self, http: httpx.AsyncClient, event: dict[str, Any]) -> None:
        case = self.cases.get(event["ref"])
        if case is None:
            self.skipped["retract of an unknown ref"] += 1
            return
        await case.accepted.wait()
        if case.report_id is None:
            self.skipped["retract of a report never accepted"] += 1
            return
        if event.get("when") == "after_referral":
            try:
                await asyncio.wait_for(case.referred.wait(), self.after_referral_timeout)
            except TimeoutError:
                self.errors["referral not seen before retract"] += 1
        case.retract_when = event.get("when", "before_referral")
        response = await self._post(
            http, f"/v1/reports/{case.report_id}/retract",
            json={"reason": event.get("reason", "retracted")}, auth=self._login(case.esp_id),
        )
        if response is not None and response.status_code == 202:
            case.retract_accepted_at = time.monotonic()

    async def _one(self, http: httpx.AsyncClient, event: dict[str, Any]) -> None:
        action = event["action"]
        if action not in REPLAYABLE:
            self.skipped[NOT_YET.get(action, f"unknown action {action}")] += 1
            return
        self.sent[action] += 1
        if action == "submit":
            await self._submit(http, event)
        else:
            await self._retract(http, event)

    async def run(
        self, stream: list[dict[str, Any]], *, rate: str = "100", duration: float | None = None,
        progress: bool = False, settle_timeout: float = 60.0,
    ) -> dict[str, Any]:
        plan = schedule(stream, rate, duration)
        if missing := {e["esp_id"] for e in stream if e.get("actor") == "esp"} - set(self.logins):
            raise ValueError(f"no login for the stream's ESPs {sorted(missing)}")
        await self.watch.start()
        tasks: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self.concurrency)
        bar = asyncio.create_task(self._progress(len(plan))) if progress else None
        try:
            async with contextlib.AsyncExitStack() as stack:
                # Several small connection pools: httpx looks over every connection of a pool on
                # each request, which made a 128-connection client the bottleneck of a replay.
                limits = httpx.Limits(max_connections=POOL_SIZE,
                                      max_keepalive_connections=POOL_SIZE)
                clients = [
                    await stack.enter_async_context(
                        httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits))
                    for _ in range(max(1, -(-self.concurrency // POOL_SIZE)))
                ]
                self.started = time.monotonic()
                for n, (at, event) in enumerate(plan):
                    delay = self.started + at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif delay < -0.05 and rate not in ("max",):
                        self.late += 1
                    await slots.acquire()
                    task = asyncio.create_task(self._one(clients[n % len(clients)], event))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(lambda _: slots.release())
                self.dispatch_seconds = time.monotonic() - self.started
                await asyncio.gather(*list(tasks))
                self.dispatch_seconds = max(self.dispatch_seconds, 1e-9)
                settled = await self._settle(clients[0], settle_timeout)
        finally:
            if bar:
                bar.cancel()
            await self.watch.stop()
        return self.report(settled, len(stream))

    async def _progress(self, total: int) -> None:
        width = 30
        while True:
            await asyncio.sleep(0.5)
            done = sum(self.sent.values()) + sum(self.skipped.values())
            elapsed = max(time.monotonic() - self.started, 1e-9)
            filled = int(width * done / max(total, 1))
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                f"{done / elapsed:7.1f}/s  accepted {len(self.by_report)}  "
                f"errors {sum(self.errors.values())}  notices {self.watch.received}   "
            )
            sys.stderr.flush()

    def _owed(self, case: Case) -> bool:
        """True while something more must still reach an agency for this case."""
        seen = self.watch.reports.get(case.report_id or "")
        referrals = seen.referrals if seen else {}
        corrections = seen.corrections if seen else {}
        if case.retract_accepted_at is not None:
            return bool(set(referrals) - set(corrections))
        if case.expect == "referred":
            return not case.agencies <= referrals.keys()
        return False

    async def _settle(self, http: httpx.AsyncClient, timeout: float) -> bool:
        """Wait until nothing more is owed and every retraction is decided (status API)."""
        deadline = time.monotonic() + timeout
        retracted = [c for c in self.cases.values() if c.retract_accepted_at is not None]
        undecided = {c.report_id for c in retracted if c.report_id}
        while time.monotonic() < deadline:
            pending = [c for c in self.by_report.values() if self._owed(c)]
            for report_id in list(undecided):
                case = self.by_report[report_id]
                try:
                    r = await http.get(f"/v1/reports/{report_id}",
                                       auth=self._login(case.esp_id))
                    status = r.json()
                except (httpx.TransportError, ValueError):
                    continue
                states = set(status.get("agencies", {}).values())
                whats = {e["what"] for e in status.get("timeline", [])}
                if "referral withheld" in whats or "rejected" in whats:
                    undecided.discard(report_id)  # never referred, nothing to correct
                    case.expect = "withheld" if "referral withheld" in whats else "rejected"
                elif states and states <= {"corrected"}:
                    undecided.discard(report_id)
            if not pending and not undecided:
                await asyncio.sleep(0.3)  # a late duplicate would show up now
                return True
            await asyncio.sleep(0.2)
        return False

    def report(self, settled: bool, stream_events: int) -> dict[str, Any]:
        referral_latency: list[float] = []
        retraction_latency: list[float] = []
        lost: Counter[str] = Counter()
        wrong: Counter[str] = Counter()
        outcome: Counter[str] = Counter()
        for case in self.cases.values():
            if case.report_id is None:
                outcome["never accepted"] += 1
                continue
            seen = self.watch.reports.get(case.report_id)
            referrals = seen.referrals if seen else {}
            corrections = seen.corrections if seen else {}
            if referrals and case.accepted_at is not None:
                referral_latency.append(max(t for t, _ in referrals.values()) - case.accepted_at)
            if set(referrals) - case.agencies:
                wrong["referral to an agency not in its jurisdiction"] += 1
            if set(corrections) - set(referrals):
                wrong["correction without a referral"] += 1
            if any(corrections[a][1] < referrals[a][1] for a in corrections if a in referrals):
                wrong["correction before its referral"] += 1
            if case.retract_accepted_at is not None:
                if case.expect in ("withheld", "rejected"):
                    outcome[f"retracted, never referred ({case.expect})"] += 1
                    if referrals:
                        wrong[f"referral of a retracted {case.expect} report"] += 1
                    continue
                outcome[f"retracted after referral ({case.retract_when})"] += 1
                lost["corrections"] += len(set(referrals) - set(corrections))
                if referrals and case.agencies != referrals.keys():
                    lost["referrals"] += len(case.agencies - referrals.keys())
                if corrections and set(corrections) >= set(referrals):
                    done = max(t for t, _ in corrections.values())
                    retraction_latency.append(done - case.retract_accepted_at)
            elif case.expect == "referred":
                outcome["referred"] += 1
                lost["referrals"] += len(case.agencies - referrals.keys())
            else:
                outcome[case.expect] += 1
                if referrals:
                    wrong[f"referral of a {case.expect} report"] += 1
        known = set(self.by_report)
        sent = sum(self.sent.values())
        return {
            "stream_events": stream_events,
            "sent": dict(self.sent),
            "not_replayed": dict(self.skipped),
            "dispatch_seconds": round(self.dispatch_seconds, 3),
            "achieved_rate": round(sent / self.dispatch_seconds, 1),
            "late_dispatches": self.late,
            "accepted": len(self.by_report),
            "errors": dict(self.errors),
            "outcomes": dict(outcome),
            "latency_ms": {
                "accepted_to_referral_delivered": percentiles(referral_latency),
                "retraction_to_all_corrections_delivered": percentiles(retraction_latency),
            },
            "notices": {
                "received": self.watch.received,
                "duplicates_absorbed": self.watch.duplicates,
                "not_notices": self.watch.refused,
                "of_other_reports": len(set(self.watch.reports) - known),
            },
            "lost": sum(lost.values()),
            "lost_by_kind": {k: v for k, v in lost.items() if v},
            "violations": dict(wrong),
            "settled": settled,
        }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"events in stream      {result['stream_events']}",
        f"sent                  {result['sent']}  (not replayed: {result['not_replayed']})",
        f"achieved rate         {result['achieved_rate']}/s over {result['dispatch_seconds']}s"
        f"  (late dispatches {result['late_dispatches']})",
        f"accepted              {result['accepted']}",
        f"errors                {result['errors'] or 'none'}",
        f"outcomes              {result['outcomes']}",
    ]
    for name, p in result["latency_ms"].items():
        lines.append(f"{name:<40} n={p['count']:<6} p50={p['p50']} p95={p['p95']} "
                     f"p99={p['p99']} max={p['max']} ms")
    n = result["notices"]
    lines += [
        f"notices               {n['received']} received, {n['duplicates_absorbed']} duplicates "
        f"absorbed, {n['not_notices']} not notices",
        f"lost                  {result['lost']} {result['lost_by_kind'] or ''}",
        f"violations            {result['violations'] or 'none'}",
        f"settled               {result['settled']}",
    ]
    return "\n".join(lines)


async def replay(
    settings: Settings, base_url: str, stream: list[dict[str, Any]], logins: dict[str, str],
    **options: Any
) -> dict[str, Any]:
    keys = ("concurrency", "retry_for", "after_referral_timeout")
    runner = Replay(settings, base_url, logins,
                    **{k: options.pop(k) for k in keys if k in options})
    return await runner.run(stream, **options)
