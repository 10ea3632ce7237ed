"""Replaying an event stream against a running stack, then judging what agencies got.

Actions are dispatched at a fixed rate, at the recorded pace, or as fast as possible, never more
than `concurrency` at once: /v1 submits and retractions, /ispws reports opened and left to be
abandoned or cancelled (withheld), and analyst amendments. Every ESP call carries an
Idempotency-Key of its own, so a retry (a refused connection, a 5xx, or an answer with
Retry-After, for up to `retry_for` seconds) never makes a second report. While it runs, a
NoticeWatch sees every notice agencies get; at the end the replay waits until the system is
quiet and hands the notices to the oracle (tipline/oracle.py), which judges them against what
the stream itself says must come of each report, never against what the system decided.

A refusal (a 4xx) must have a cause the report's state shows: a retraction refused because an
earlier try of it took effect (5101, the report retracted), or a cancel that came after the
deadline (5103, the report abandoned). Any other refusal of an action the stream says must be
accepted is counted as one without cause (`refusals`): a transient fault answered for good.
"""

import asyncio
import contextlib
import math
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from shared.agencies import load_agencies
from shared.audiences import Kind
from shared.settings import Settings
from tipline import oracle
from tipline.synthetic import ispws_document
from tipline.watch import NoticeWatch

ACCEPT_JSON = {"Accept": "application/json"}
ALREADY_RETRACTED = 5101  # the CyberTipline code both APIs answer with 409
ABANDONED = 5103
# A refusal's cause: (code, the report's state that explains it).
CAUSES = {(ALREADY_RETRACTED, "retracted"), (ABANDONED, "abandoned")}


def refusal_code(response: httpx.Response) -> int | None:
    """The CyberTipline code of a refusal, /v1's or /ispws's as JSON (None: not one)."""
    try:
        body = response.json()
        found = (body["detail"]["code"] if "detail" in body
                 else body["reportResponse"]["responseCode"])
        return int(found)
    except (ValueError, KeyError, TypeError):
        return None


def with_cause(code: int | None, state: str | None) -> bool:
    """Whether a refusal of a report's retraction is explained by the report's state."""
    return (code, state) in CAUSES


@dataclass
class Case:
    """One report of the stream: what tipline answered, and when."""

    ref: str
    esp_id: str
    expected: oracle.Expected
    report_id: str | None = None
    first_try: float | None = None  # the submit's first attempt (latency starts here)
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    referred: asyncio.Event = field(default_factory=asyncio.Event)
    retract_first_try: float | None = None
    retract_accepted: bool = False
    decided: bool = False  # the status API says nothing more will happen on its own
    refusals: list[tuple[str, int, int | None]] = field(default_factory=list)  # what, http, code


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
        analyst: tuple[str, str] | None = None, analyst_url: str | None = None,
        concurrency: int = 64, retry_for: float = 30.0, after_referral_timeout: float = 60.0,
        agencies: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = base_url
        self.logins = logins  # each ESP's password, for HTTP Basic
        self.analyst = analyst  # (id, password) for the analyst API
        self.analyst_url = analyst_url
        self.concurrency = concurrency
        self.retry_for = retry_for
        self.after_referral_timeout = after_referral_timeout
        self.run_id = uuid.uuid4().hex[:12]  # Idempotency-Keys of this run are its own
        self.cases: dict[str, Case] = {}
        self.by_report: dict[str, Case] = {}
        self.errors: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.late = 0
        self.refusals: dict[str, Any] = {"with_cause": 0, "without_cause": 0, "examples": []}
        # Every agency of the registry is watched, so a notice to one the stream never names is
        # seen (misrouted); a caller may narrow it (each watched partition is fetched every few
        # milliseconds, and that load lands on the broker under test).
        self.watch = NoticeWatch(settings, agencies or list(
            load_agencies(settings.tipline_routing_file)))
        self.watch.on_notice = self._on_notice
        self.started = 0.0
        self.dispatch_seconds = 0.0
        self.settle_left = 0.0
        self.abandonment_not_due: set[str] = set()  # abandoned after the settle would end

    def _referred_everywhere(self, case: Case) -> bool:
        seen = self.watch.reports.get(case.report_id or "")
        return seen is not None and case.expected.agencies <= seen.referrals.keys()

    def _on_notice(self, report_id: str) -> None:
        case = self.by_report.get(report_id)
        if case and not case.referred.is_set() and self._referred_everywhere(case):
            case.referred.set()

    def _login(self, esp_id: str) -> tuple[str, str]:
        return esp_id, self.logins[esp_id]

    def _key(self, event: dict[str, Any]) -> dict[str, str]:
        return {"Idempotency-Key": f"{self.run_id}-{event['ref']}-{event['action']}"}

    async def _post(
        self, http: httpx.AsyncClient, what: str, path: str, *, done: Any = None,
        again: tuple[int, ...] = (), case: Case | None = None, **kw: Any
    ) -> httpx.Response | None:
        """POST with retries for what a retry can fix (a refused connection, a 5xx, an answer
        with Retry-After, a status in `again`); None when it never succeeded. Before a retry,
        `done()` (when given) may say the call took effect after all. A refusal is kept on
        `case`, to be judged against the report's state at the end."""
        deadline = time.monotonic() + self.retry_for
        pause = 0.05
        while True:
            try:
                response = await http.post(path, **kw)
                if (response.status_code < 500 and "retry-after" not in response.headers
                        and response.status_code not in again):
                    if response.status_code >= 400:
                        self.errors[f"{what}: http {response.status_code}"] += 1
                        if case is not None:
                            case.refusals.append((what, response.status_code,
                                                  refusal_code(response)))
                    return response
                self.errors[f"{what}: http {response.status_code} (retried)"] += 1
            except httpx.TransportError as exc:
                self.errors[f"{what}: {type(exc).__name__} (retried)"] += 1
            if time.monotonic() > deadline:
                self.errors[f"{what}: gave up"] += 1
                return None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
            if done is not None and await done():
                return httpx.Response(202)

    async def _await_report(self, event: dict[str, Any]) -> Case | None:
        case = self.cases.get(event["ref"])
        if case is None:
            self.skipped[f"{event['action']} of an unknown ref"] += 1
            return None
        await case.accepted.wait()
        if case.report_id is None:
            self.skipped[f"{event['action']} of a report never accepted"] += 1
            return None
        return case

    async def _await_referral(self, case: Case, what: str) -> None:
        try:
            await asyncio.wait_for(case.referred.wait(), self.after_referral_timeout)
        except TimeoutError:
            self.errors[f"referral not seen before {what}"] += 1

    def _accepted(self, case: Case, report_id: str) -> None:
        case.report_id = report_id
        self.by_report[report_id] = case
        self._on_notice(report_id)

    async def _submit(self, http: httpx.AsyncClient, case: Case, event: dict[str, Any]) -> None:
        case.first_try = time.monotonic()
        response = await self._post(http, "submit", "/v1/reports", json={"report": event["report"]},
                                    auth=self._login(case.esp_id), headers=self._key(event),
                                    case=case)
        if response is not None and response.status_code == 202:
            self._accepted(case, response.json()["report_id"])

    async def _open(self, http: httpx.AsyncClient, case: Case, event: dict[str, Any]) -> None:
        """An /ispws report opened and never finished (then abandoned, or cancelled)."""
        case.first_try = time.monotonic()
        response = await self._post(http, "open", "/ispws/submit",
                                    json=ispws_document(event["report"]),
                                    auth=self._login(case.esp_id),
                                    headers={**ACCEPT_JSON, **self._key(event)}, case=case)
        if response is not None and response.status_code == 200:
            self._accepted(case, str(response.json()["reportResponse"]["reportId"]))

    async def _retract(self, http: httpx.AsyncClient, event: dict[str, Any]) -> None:
        case = await self._await_report(event)
        if case is None:
            return
        if event.get("api") == "ispws":  # cancelled before it was finished
            response = await self._post(
                http, "cancel", "/ispws/retract",
                data={"id": case.report_id, "reason": event["reason"]},
                auth=self._login(case.esp_id), headers={**ACCEPT_JSON, **self._key(event)},
                case=case)
            case.retract_accepted = response is not None and response.status_code == 200
            return
        if event.get("when") == "after_referral":
            await self._await_referral(case, "retract")
        case.retract_first_try = time.monotonic()
        response = await self._post(
            http, "retract", f"/v1/reports/{case.report_id}/retract",
            json={"reason": event.get("reason", "retracted")}, auth=self._login(case.esp_id),
            headers=self._key(event), case=case)
        case.retract_accepted = response is not None and (response.status_code == 202 or (
            # An earlier try took effect (its answer lost, its key given up on a 5xx), and the
            # report's only retractor is this replay.
            response.status_code == 409 and refusal_code(response) == ALREADY_RETRACTED))

    async def _amend(self, analyst: httpx.AsyncClient, event: dict[str, Any]) -> None:
        case = await self._await_report(event)
        if case is None:
            return
        await self._await_referral(case, "amend")
        path = f"/v1/analyst/reports/{case.report_id}"
        amendment = event["amendment"]

        async def done() -> bool:
            """The analyst API has no Idempotency-Key: before a retry, look for the amendment
            an earlier try may have made (its reason is this action's own)."""
            try:
                r = await analyst.get(path, auth=self.analyst)
                made = r.json().get("amendments_after_release", []) if r.is_success else []
            except (httpx.TransportError, ValueError):
                return False
            return any(c.get("amendment", {}).get("reason") == amendment["reason"]
                       for c in made)

        # 409: the report is being released at this instant ("try again").
        response = await self._post(analyst, "amend", f"{path}/amendments", json=amendment,
                                    auth=self.analyst, done=done, again=(409,), case=case)
        if response is None or response.status_code != 202:
            self.errors["amendment not made"] += 1

    async def _one(self, http: httpx.AsyncClient, analyst: httpx.AsyncClient | None,
                   event: dict[str, Any]) -> None:
        action = event["action"]
        self.sent[action] += 1
        if action in ("submit", "open"):
            case = self.cases[event["ref"]]
            try:
                await (self._submit if action == "submit" else self._open)(http, case, event)
            finally:
                case.accepted.set()
        elif action == "retract":
            await self._retract(http, event)
        elif action == "amend" and analyst is not None:
            await self._amend(analyst, event)

    async def run(
        self, stream: list[dict[str, Any]], *, rate: str = "100", duration: float | None = None,
        progress: bool = False, settle_timeout: float = 60.0,
    ) -> dict[str, Any]:
        plan = schedule(stream, rate, duration)
        if missing := {e["esp_id"] for e in stream if e.get("actor") == "esp"} - set(self.logins):
            raise ValueError(f"no login for the stream's ESPs {sorted(missing)}")
        if any(e["action"] == "amend" for e in stream) and not (self.analyst and
                                                                 self.analyst_url):
            raise ValueError("the stream amends reports: an analyst login and the analyst API's "
                             "URL are needed")
        expected = oracle.expectations(e for _, e in plan)
        for _, event in plan:
            if event["action"] in ("submit", "open"):
                self.cases[event["ref"]] = Case(event["ref"], event["esp_id"],
                                                expected[event["ref"]])
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
                analyst = await stack.enter_async_context(httpx.AsyncClient(
                    base_url=self.analyst_url, timeout=30)) if self.analyst_url else None
                self.started = time.monotonic()
                for n, (at, event) in enumerate(plan):
                    delay = self.started + at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif delay < -0.05 and rate not in ("max",):
                        self.late += 1
                    await slots.acquire()
                    task = asyncio.create_task(
                        self._one(clients[n % len(clients)], analyst, event))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(lambda _: slots.release())
                self.dispatch_seconds = time.monotonic() - self.started
                await asyncio.gather(*list(tasks))
                self.dispatch_seconds = max(self.dispatch_seconds, 1e-9)
                settled = await self._settle(clients[0], settle_timeout)
                await self._judge_refusals(clients[0])
        finally:
            if bar:
                bar.cancel()
            await self.watch.stop()
        return self.report(settled, len(stream))

    async def _progress(self, total: int) -> None:
        width = 30
        while True:
            await asyncio.sleep(0.5)
            done = sum(self.sent.values())
            elapsed = max(time.monotonic() - self.started, 1e-9)
            filled = int(width * done / max(total, 1))
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                f"{done / elapsed:7.1f}/s  accepted {len(self.by_report)}  "
                f"errors {sum(self.errors.values())}  notices {self.watch.received}   "
            )
            sys.stderr.flush()

    def _owes(self, case: Case) -> bool:
        """True while a notice the stream says is owed has not come (yet)."""
        verdict = oracle.Verdict()
        got = self.watch.of_report.get(case.report_id or "", [])
        oracle.judge_report(verdict, case.expected, case.report_id, got)
        return verdict.counts["lost"] > 0

    def _decided(self, case: Case, status: dict[str, Any]) -> bool:
        """Whether the ESP's status (and, for where a report went, which the ESP is never told,
        the notices the agencies got) says nothing more will happen to the report on its own:
        used only to know when to stop waiting, never to judge."""
        exp = case.expected
        whats = {e["what"] for e in status.get("timeline", [])}
        referred = Kind.AVAILABLE in whats
        if exp.outcome == "abandoned":
            due = status.get("abandoned_after") if status.get("state") == "open" else None
            # Not abandoned before the settle ends (a stack with the default 24 h): the oracle
            # still sees that it reached no agency; the report says how many.
            if due and datetime.fromisoformat(due).timestamp() > time.time() + self.settle_left:
                self.abandonment_not_due.add(case.ref)
                return True
            return bool(status.get("state") == "abandoned" and status.get("retraction"))
        if exp.outcome == "withheld":  # cancelled; or abandoned, if the cancel came too late
            return status.get("state") in ("retracted", "abandoned")
        if "rejected" in whats:
            return True
        if exp.outcome == "invalid":  # rejected, or (wrongly) on its way to an agency
            return referred or Kind.NOT_AVAILABLE in whats
        if exp.retracted:
            return Kind.NOT_AVAILABLE in whats or (
                referred and status.get("status") == "retracted"
                and oracle.corrected((n.agency, n.kind)
                                     for n in self.watch.of_report.get(case.report_id or "", ())))
        return True

    def _to_decide(self, case: Case) -> bool:
        """Reports whose end is not visible in the notices alone: invalid (rejected, or not
        yet?), retracted (withheld, or referred and corrected?), abandoned and withheld."""
        exp = case.expected
        return (case.report_id is not None and not case.decided
                and (exp.outcome != "valid" or exp.retracted is not None))

    async def _settle(self, http: httpx.AsyncClient, timeout: float) -> bool:
        """Wait until nothing more is owed and every report is decided (status API)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.settle_left = deadline - time.monotonic()
            for case in [c for c in self.cases.values() if self._to_decide(c)]:
                try:
                    r = await http.get(f"/v1/reports/{case.report_id}",
                                       auth=self._login(case.esp_id))
                    case.decided = r.is_success and self._decided(case, r.json())
                except (httpx.TransportError, ValueError):
                    continue
            pending = [c for c in self.by_report.values() if self._owes(c)]
            if not pending and not any(self._to_decide(c) for c in self.cases.values()):
                await asyncio.sleep(1.0)  # a late duplicate would show up now
                return True
            await asyncio.sleep(0.3)
        return False

    async def _judge_refusals(self, http: httpx.AsyncClient) -> None:
        """Each refusal against its report's state now (status API): with cause, or not."""
        for case in (c for c in self.cases.values() if c.refusals):
            state = None
            if case.report_id is not None:
                with contextlib.suppress(httpx.TransportError, ValueError):
                    r = await http.get(f"/v1/reports/{case.report_id}",
                                       auth=self._login(case.esp_id))
                    state = r.json().get("state") if r.is_success else None
            for what, status, code in case.refusals:
                explained = what in ("retract", "cancel") and with_cause(code, state)
                self.refusals["with_cause" if explained else "without_cause"] += 1
                if not explained and len(self.refusals["examples"]) < 10:
                    self.refusals["examples"].append(
                        f"{case.ref} {what}: http {status} code {code} (report {state})")

    def report(self, settled: bool, stream_events: int) -> dict[str, Any]:
        verdict = oracle.judge({r: c.expected for r, c in self.cases.items()},
                               {r: c.report_id for r, c in self.cases.items()},
                               self.watch.notices)
        referral_latency: list[float] = []
        retraction_latency: list[float] = []
        for case in self.cases.values():
            seen = self.watch.reports.get(case.report_id or "")
            if seen is None or case.expected.outcome != "valid":
                continue
            if case.first_try is not None and self._referred_everywhere(case):
                referral_latency.append(max(seen.referrals[a][0] for a in case.expected.agencies)
                                        - case.first_try)
            corrected = case.expected.agencies & seen.corrections.keys()
            if (case.retract_first_try is not None and case.expected.retracted == "after_referral"
                    and corrected == case.expected.agencies):
                retraction_latency.append(max(seen.corrections[a][0] for a in corrected)
                                          - case.retract_first_try)
        sent = sum(self.sent.values())
        judged = verdict.as_dict()
        return {
            "stream_events": stream_events,
            "sent": dict(self.sent),
            "skipped": dict(self.skipped),
            "dispatch_seconds": round(self.dispatch_seconds, 3),
            "achieved_rate": round(sent / self.dispatch_seconds, 1),
            "late_dispatches": self.late,
            "accepted": len(self.by_report),
            "errors": dict(self.errors),
            "outcomes": judged.pop("outcomes"),
            "latency_ms": {
                "submit_to_referral_delivered": percentiles(referral_latency),
                "retract_to_all_corrections_delivered": percentiles(retraction_latency),
            },
            "notices": {
                "received": self.watch.received,
                "distinct": len(self.watch.notices),
                "redeliveries_absorbed": self.watch.duplicates,
                "not_notices": self.watch.refused,
                "of_other_reports": judged.pop("unattributed"),
            },
            "oracle": judged,
            "lost": judged["lost"],
            "abandonment_not_due": len(self.abandonment_not_due),
            "refusals": self.refusals,
            "undecided": dict(Counter(c.expected.label for c in self.cases.values()
                                      if self._to_decide(c))),
            "settled": settled,
        }


def render(result: dict[str, Any]) -> str:
    o = result["oracle"]
    lines = [
        f"events in stream      {result['stream_events']}",
        f"sent                  {result['sent']}",
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
        f"notices               {n['received']} received, {n['distinct']} distinct, "
        f"{n['redeliveries_absorbed']} redeliveries absorbed, {n['not_notices']} not notices, "
        f"{n['of_other_reports']} of other reports",
        f"oracle                lost {o['lost']}, duplicated {o['duplicated']}, misrouted "
        f"{o['misrouted']}, out of order {o['out_of_order']}",
    ]
    for counter, examples in o["examples"].items():
        lines += [f"  {counter:<12} {e}" for e in examples]
    refused = result["refusals"]
    lines.append(f"refusals              {refused['with_cause']} with cause, "
                 f"{refused['without_cause']} without")
    lines += [f"  without cause {e}" for e in refused["examples"]]
    lines.append(f"settled               {result['settled']}"
                 + (f"  (undecided: {result['undecided']})" if result["undecided"] else ""))
    return "\n".join(lines)


def clean(result: dict[str, Any]) -> bool:
    """The oracle's four counters are 0, no refusal without cause, and the run settled."""
    o = result["oracle"]
    return (result["settled"] and not any(o[c] for c in oracle.COUNTERS)
            and not result["refusals"]["without_cause"])


async def replay(
    settings: Settings, base_url: str, stream: list[dict[str, Any]], logins: dict[str, str],
    **options: Any
) -> dict[str, Any]:
    keys = ("concurrency", "retry_for", "after_referral_timeout", "analyst", "analyst_url")
    runner = Replay(settings, base_url, logins,
                    **{k: options.pop(k) for k in keys if k in options})
    return await runner.run(stream, **options)
