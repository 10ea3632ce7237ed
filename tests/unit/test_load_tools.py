"""The load tools' pure parts: the generated stream, the replay schedule, percentiles, the
names of service copies; and the ports the stack gives its children."""

import json
import socket
from pathlib import Path

import httpx
import pytest

from tipline.generate import Mix, events, read, write
from tipline.replay import percentiles, refusal_code, schedule, with_cause
from tipline.stack import CONSUMERS, copy_name, free_port, service_of
from tipline.synthetic import expected_agencies


def test_same_seed_same_stream() -> None:
    assert list(events(200, seed=9)) == list(events(200, seed=9))
    assert list(events(200, seed=9)) != list(events(200, seed=10))


def test_stream_holds_every_kind_of_action_in_time_order() -> None:
    stream = list(events(2000, seed=3, mix=Mix()))
    kinds = {(e["action"], e["expect"]) for e in stream}
    assert {("submit", "valid"), ("submit", "invalid"),
            ("retract", "retracted_before_referral"), ("retract", "retracted_after_referral"),
            ("open", "abandoned"), ("open", "withheld"), ("retract", "withheld"),
            ("amend", "amended")} == kinds
    assert any("duplicate_of" in e for e in stream)
    assert [e["t"] for e in stream] == sorted(e["t"] for e in stream)
    opened = {e["ref"] for e in stream if e["action"] in ("submit", "open")}
    assert all(e["ref"] in opened for e in stream if e["action"] in ("retract", "amend"))
    # Each expectation names the agencies from the generator's own table, none where nothing
    # may reach an agency.
    for e in stream:
        if e["expect"] in ("invalid", "abandoned", "withheld"):
            assert e["agencies"] == []
        elif e["action"] == "submit":
            assert e["agencies"] == sorted(expected_agencies(e["report"]))


def test_file_digests_are_random_not_real() -> None:
    originals = [e["report"] for e in events(500, seed=1)
                 if "report" in e and "duplicate_of" not in e]
    digests = [f["sha256"] for r in originals for f in r.get("files", [])]
    assert digests and len(set(digests)) == len(digests)
    assert all(len(d) == 64 for d in digests)


def test_read_takes_the_header_and_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with path.open("w") as out:
        write(out, events(30, seed=1), seed=1)
    head, stream = read(path)
    assert head["version"] == 2 and head["routing"]["places"]
    assert stream == list(events(30, seed=1))
    with path.open("a") as out:
        out.write("{broken\n")
    with pytest.raises(ValueError, match=r"s.jsonl:\d+: not JSON"):
        read(path)
    lines = path.read_text().splitlines()[:2]
    action = json.loads(lines[1])
    for bad, reason in (({**action, "action": "delete"}, "an action in"),
                        ({**action, "expect": None}, "needs expect"),
                        ({**action, "expect": "valid", "agencies": ["de-bka", "uk-nca"]},
                         "disagree with the header's routing table")):
        path.write_text(lines[0] + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match=reason):
            read(path)


def test_a_version_1_stream_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps({"t": 0, "seq": 0, "action": "submit", "ref": "r0",
                                "expect": "referred"}) + "\n")
    with pytest.raises(ValueError, match=r"old.jsonl:1: not a version 2 stream.*tipline generate"):
        read(path)


def test_schedule_fixed_rate_recorded_pace_and_max() -> None:
    stream = [{"t": 0.5 * i, "ref": f"r{i}", "action": "submit"} for i in range(4)]
    assert [at for at, _ in schedule(stream, "2", None)] == [0.0, 0.5, 1.0, 1.5]
    assert [at for at, _ in schedule(stream, "recorded", None)] == [0.0, 0.5, 1.0, 1.5]
    assert {at for at, _ in schedule(stream, "max", None)} == {0.0}
    # A duration repeats the stream, and refs of a repeat are distinct.
    repeated = schedule(stream, "4", 3.0)
    assert len(repeated) == 12
    assert len({e["ref"] for _, e in repeated}) == 12


def test_a_copy_name_tells_its_service() -> None:
    for service in CONSUMERS:
        assert [copy_name(service, n) for n in (1, 2, 3)] == [
            service, f"{service}-2", f"{service}-3"]
        assert {service_of(copy_name(service, n)) for n in (1, 2, 12)} == {service}
    assert service_of("broker") == "broker"
    assert service_of("relay-x") == "relay-x"


def test_percentiles_in_milliseconds() -> None:
    p = percentiles([i / 1000 for i in range(1, 101)])
    assert (p["p50"], p["p95"], p["p99"], p["max"], p["count"]) == (50.0, 95.0, 99.0, 100.0, 100)
    assert percentiles([])["p99"] is None


def test_the_load_tools_routing_knowledge_agrees_with_the_rules() -> None:
    """tipline.synthetic writes down where each synthetic report goes; the routing file in the
    repository must agree (or the demo and replay would expect the wrong agencies)."""
    import random

    from services.supplementation.jurisdiction import load_rules, resolve
    from shared.contracts import Report
    from shared.rules import INCIDENT_TYPES
    from shared.settings import CONFIG_DIR
    from tipline.synthetic import PLACES, expected_agencies, synthetic_report

    rules = load_rules(CONFIG_DIR / "routing.yaml")
    rng = random.Random(5)
    for place in PLACES:
        for incident_type in INCIDENT_TYPES:
            report = {**synthetic_report(rng), "location": place, "incident_type": incident_type}
            got = resolve("r", Report.model_validate(report), rules).agencies
            assert set(got) == expected_agencies(report), (place, incident_type)


def test_a_free_port_is_bindable_and_outside_the_ephemeral_range() -> None:
    """Outgoing connections never take it before the child the port is for binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= p < low for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_stack_never_gets_the_same_free_port_twice() -> None:
    """A stack picks every port before any child binds one: 2,000 picks, none twice (by chance
    alone, 2,000 picks from 10,000 ports would repeat almost surely)."""
    picks = [free_port() for _ in range(2000)]
    assert len(set(picks)) == len(picks)


def test_a_refusal_has_a_cause_only_in_the_state_that_explains_it() -> None:
    ispws = httpx.Response(409, json={"reportResponse": {"responseCode": 5103}})
    v1 = httpx.Response(409, json={"detail": {"code": 5101, "description": "..."}})
    conflict = httpx.Response(409, json={"detail": "a call with this key is in progress"})
    assert (refusal_code(ispws), refusal_code(v1), refusal_code(conflict)) == (5103, 5101, None)
    assert with_cause(5101, "retracted") and with_cause(5103, "abandoned")
    # The scaled chaos run's cancel: 5103 while the report stayed open, never abandoned.
    assert not with_cause(5103, "open")
    assert not with_cause(5101, "open") and not with_cause(None, "retracted")
    assert not with_cause(5001, None)  # "no such report" for a report the ESP was given
