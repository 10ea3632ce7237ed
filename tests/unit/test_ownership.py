"""Each service owns its data (tipline/ownership.py, shown in docs/architecture.md "Who owns
what").

Static checks over the code: the Redis keys each folder names are the ones the table gives its
owner, so a service that starts touching another's keys fails here (and would be refused by its
Redis ACL user, made from the same table); and no service imports another service's code (only
referral and retraction share the notification context).
"""

import ast
import re
from pathlib import Path

from tipline.access import REDIS_CONNECTION, REDIS_READS, REDIS_WRITES
from tipline.ownership import OWNERS, names

ROOT = Path(__file__).resolve().parents[2]
# A key helper names its keys as `{tag}:name` / `tipline:{{{report_id}}}:name` (per report) or
# "tipline:name" (global).
PER_REPORT = re.compile(r"(?:\{tag\}|tipline:\{\{\{\w+\}\}\}):([a-z][a-z:-]*)")
GLOBAL = re.compile(r"\"tipline:([a-z][a-z-]*(?::[a-z-]+)*)")
# Where each owner's code lives (a file listed under one owner is left out of another's folder).
FOLDERS = {
    "intake": ["services/intake"],
    "ESP directory": ["services/intake/esps.py"],
    "validation": ["services/validation"],
    "supplementation": ["services/supplementation"],
    "notification": ["services/notification"],
    "referral": ["services/referral"],
    "retraction": ["services/retraction"],
    "console": ["services/console"],
    "analyst directory": ["shared/analysts.py"],
}
# Who may import whose code, beside shared/.
USES = {"referral": {"notification"}, "retraction": {"notification"}}


def keys_in(paths: list[str]) -> set[str]:
    claimed = {ROOT / p for ps in FOLDERS.values() for p in ps if (ROOT / p).is_file()}
    found: set[str] = set()
    for path in paths:
        base = ROOT / path
        for file in [base] if base.is_file() else sorted(set(base.rglob("*.py")) - claimed):
            text = file.read_text()
            found |= {k.rstrip(":") for k in PER_REPORT.findall(text)}
            found |= {k.rstrip(":") for k in GLOBAL.findall(text)}
    return found


def documented() -> dict[str, set[str]]:
    """The ownership table: owner -> the keys it names (`{r}:x` and `tipline:x` as x)."""
    return {h.owner: names(h) for h in OWNERS}


def test_the_table_has_a_row_for_every_owner() -> None:
    assert set(documented()) == set(FOLDERS)


def test_each_folder_touches_only_the_keys_its_owner_owns() -> None:
    table = documented()
    for owner, paths in FOLDERS.items():
        assert keys_in(paths) == table[owner], (
            f"{owner} names keys {sorted(keys_in(paths))}; tipline/ownership.py gives it "
            f"{sorted(table[owner])}")
    # And every other place (shared/, the command line's tools excepted) names none.
    elsewhere = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "shared").glob("*.py"))
                 if p.name != "analysts.py"]
    assert keys_in(elsewhere) == set()


def imported_services(file: Path) -> set[str]:
    tree = ast.parse(file.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    return {m.split(".")[1] for m in names if m.startswith("services.") and m.count(".") >= 1}


def test_no_service_imports_another_services_code() -> None:
    for service in ("intake", "validation", "supplementation", "referral", "retraction",
                    "console", "notification"):
        allowed = {service, *USES.get(service, set())}
        for file in sorted((ROOT / "services" / service).rglob("*.py")):
            assert imported_services(file) <= allowed, (file, imported_services(file))
    for file in sorted((ROOT / "shared").rglob("*.py")):
        assert imported_services(file) == set(), file


def test_the_check_sees_a_key_helper() -> None:
    """The patterns find keys written the ways the helpers write them (so the checks above can
    fail)."""
    assert PER_REPORT.findall('tag = f"tipline:{{{report_id}}}"; f"{tag}:case:x"') == ["case:x"]
    assert PER_REPORT.findall('f"tipline:{{{report_id}}}:ledger"') == ["ledger"]
    assert GLOBAL.findall('KEY = "tipline:esps"; f"tipline:content:{sha}"') == ["esps", "content"]


# The Redis commands code sends: in Lua (`redis.call('HSET', ...)`), raw (`execute_command(
# "EVALSHA", ...)`) and through redis-py's methods on a store or a pipeline (`pipe.hsetnx(`).
LUA = re.compile(r"redis\.call\('(\w+)'")
RAW = re.compile(r"execute_command\(\"(\w+)\"")
METHOD = re.compile(r"\b(?:self\._redis|self\.redis|redis|pipe)\.(\w+)\(")
CLIENT_SIDE = {"call", "pipeline", "execute", "execute_command", "register_script", "aclose"}


def commands_in(folders: list[str]) -> set[str]:
    found: set[str] = set()
    for folder in folders:
        for file in sorted((ROOT / folder).rglob("*.py")):
            text = file.read_text()
            found |= {c.lower() for c in LUA.findall(text) + RAW.findall(text)}
            found |= {m.replace("_", "|") for m in METHOD.findall(text) if m not in CLIENT_SIDE}
    return found


def test_every_command_the_services_send_is_one_their_redis_users_may_run() -> None:
    """A command missing from tipline/access.py would be refused (NOPERM) in production only."""
    allowed = {*REDIS_CONNECTION, *REDIS_READS, *REDIS_WRITES}
    sent = commands_in(["services", "shared"])
    assert {"hsetnx", "zrangebyscore", "evalsha", "script|load", "hdel"} <= sent  # it sees them
    assert sent <= allowed, f"not allowed to the services' Redis users: {sorted(sent - allowed)}"
