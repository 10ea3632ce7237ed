"""Who owns which Redis keys, and which Redis users may write or only read them: one table.

Three things follow from it: the table "Who owns what" in docs/architecture.md (`tipline docs`
writes it), the static check that each owner's code names exactly its keys
(tests/unit/test_ownership.py), and each service's Redis ACL user (tipline/access.py), so a
service can touch only the keys this table gives it.

Keys are written as in the document: `{r}:name` is a per-report key `tipline:{<report id>}:name`
(the id a hash tag, one Redis Cluster slot a report), `tipline:name` a key of its own, and
`tipline:name:…` a family of keys (`tipline:name:<anything>`).
"""

from dataclasses import dataclass

OPERATOR = "operator"  # the Redis user of the operator's tools (tipline esp add, analyst add)
PER_REPORT = "{r}:"
FAMILY = ":…"


@dataclass(frozen=True)
class Holding:
    owner: str
    keys: tuple[str, ...]
    told: str  # what others learn of it, and how
    writers: tuple[str, ...] = ()  # Redis users that read and write these keys
    readers: tuple[str, ...] = ()  # Redis users that may only read them


OWNERS = (
    Holding(
        "intake",
        ("{r}:draft", "{r}:pending", "{r}:files", "{r}:described", "{r}:contents", "{r}:report",
         "{r}:seen", "{r}:timeline", "tipline:idempotency:…", "tipline:abandonment:deadlines",
         "tipline:intake:due", "tipline:forms:…", "tipline:form-key"),
        "drafts, submissions, retraction requests and public reporters' additions as events; the "
        "timeline is its own (the ESP's view), fed by the others' `TimelineFacts` in the ESP's "
        "form; the public form's key and the forms sent (by their token) are no one else's",
        writers=("intake",)),
    Holding(
        "ESP directory", ("tipline:esps",),
        "written by `tipline esp add` only; read by intake to log ESPs in",
        writers=(OPERATOR,), readers=("intake",)),
    Holding(
        "validation", ("tipline:content:…",),
        "verdicts as `ReportValidated`/`ReportRejected`; cross-report findings among one ESP's "
        "reports as facts",
        writers=("validation",)),
    Holding(
        "supplementation",
        ("{r}:case", "{r}:case:supplements", "{r}:case:amendments", "{r}:case:after-release",
         "{r}:case:retracted", "{r}:case:additions", "tipline:triage"),
        "`ReportSupplemented` (supplements, amendments, routing, priority), `AmendReport` for "
        "changes after release, `ReportClosed`; learns of retractions from `ReportRetracted`, "
        "of public reporters' additions from `InformationAdded`",
        writers=("supplementation",)),
    Holding(
        "notification",
        ("{r}:ledger", "{r}:retracted", "{r}:amendments", "{r}:priority", "{r}:acks",
         "{r}:notices", "{r}:resends", "tipline:acks:due"),
        "written by referral and retraction only; `ReportReferred`, `ReportRetracted`, "
        "`tipline.notices.*` and facts tell the rest",
        writers=("referral", "retraction")),
    Holding("referral", (), "(none of its own: the notification context)"),
    Holding("retraction", (), "(none of its own: the notification context)"),
    Holding(
        "console", ("tipline:console:signed-out",),
        "nothing: when each staff member last signed out, so their sessions issued before end "
        "(sessions are its own business: the analyst directory stays `tipline analyst`'s); its "
        "read model is a SQLite store of its own, each copy its own",
        writers=("console",)),
    Holding(
        "analyst directory", ("tipline:analysts", "tipline:analyst-roles"),
        "written by `tipline analyst` only; read by supplementation and the console to log "
        "staff in",
        writers=(OPERATOR,), readers=("supplementation", "console")),
)


def pattern(key: str) -> str:
    """The Redis glob naming every key `key` stands for. A per-report pattern ends in
    `}:name`, so `{r}:retracted` cannot match supplementation's `{r}:case:retracted`."""
    if key.startswith(PER_REPORT):
        return "tipline:{*}:" + key.removeprefix(PER_REPORT)
    return key.removesuffix(FAMILY) + ":*" if key.endswith(FAMILY) else key


def names(holding: Holding) -> set[str]:
    """Its keys as the code's helpers name them: `draft` for `{r}:draft`, `content` for
    `tipline:content:…`."""
    return {k.removeprefix(PER_REPORT).removeprefix("tipline:").removesuffix(FAMILY)
            for k in holding.keys}


def access(user: str) -> tuple[list[str], list[str]]:
    """(patterns `user` may write, patterns it may only read)."""
    writes = [pattern(k) for h in OWNERS if user in h.writers for k in h.keys]
    reads = [pattern(k) for h in OWNERS if user in h.readers for k in h.keys]
    return writes, reads


def table() -> str:
    """The ownership table of docs/architecture.md, in Markdown."""
    rows = ["| owner | its Redis keys | Redis users (ACL) | what others learn of it, and how |",
            "| --- | --- | --- | --- |"]
    for h in OWNERS:
        keys = ", ".join(f"`{k}`" for k in h.keys) or "(none)"
        users = "; ".join(part for part in (
            "writes: " + ", ".join(h.writers) if h.writers else "",
            "reads only: " + ", ".join(h.readers) if h.readers else "") if part) or "none"
        rows.append(f"| {h.owner} | {keys} | {users} | {h.told} |")
    return "\n".join(rows) + "\n"
