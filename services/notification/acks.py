"""An agency acknowledges a correction (or an amendment), and what happens when it does not.

1. The notification flow (flow.py) tracks every correction and amendment before its first send
   (awaiting.py: `awaiting`), whichever service sends it.
2. The agency's client verifies the notice's signature and answers on tipline.agency.acks with an
   ack signed by a key it registered (`tipline agency keys`).
3. The flow (`NotificationFlow.acknowledge`, run by the retraction service) refuses a response
   not signed by one of that agency's registered keys (`authenticate`), about a report the ledger
   says the agency never received, or acking a notice that was not sent to it (`misdirected`):
   each dead-lettered with why, as an agency answers only for what it was told. Otherwise the
   notice moves `awaiting -> acked` and NoticeAcknowledged goes out (the console shows it; the
   report's ESP is told nothing of it: shared/audiences.py).
4. A notice still awaiting after `TIPLINE_ACK_TIMEOUT_S` is sent again, the very bytes first sent
   (`NotificationFlow.resend_overdue`); after `TIPLINE_MAX_RESENDS` re-sends it is escalated
   (NoticeEscalated): people must act. An ack after that is recorded as late.
"""

from services.notification.notices import notice_id
from shared.agencies import AgencyRegistry
from shared.batches import Poison
from shared.contracts import AgencyNotice, AgencyResponse
from shared.signing import BadSignature


def authenticate(registry: AgencyRegistry, response: AgencyResponse) -> None:
    """Refuse a response unless it is signed by a key its agency registered: anyone who can
    write to the acks topic could otherwise stop re-sends and escalation."""
    agency = registry.get(response.agency_id)
    if agency is None:
        raise Poison(f"response from unknown agency {response.agency_id}")
    verifier = agency.verifier()
    if verifier is None:
        raise Poison(f"{response.agency_id} has no registered key, so it cannot acknowledge "
                     "(register one: tipline agency keys)")
    try:
        verifier.verify(response.model_dump(mode="json"))
    except BadSignature as exc:
        raise Poison(f"response from {response.agency_id} refused: {exc}") from None


def never_received(response: AgencyResponse) -> Poison:
    return Poison(f"{response.agency_id} never received report {response.report_id[:40]}: "
                  f"its {response.kind} is refused")


def misdirected(response: AgencyResponse, tracked: AgencyNotice | None) -> Poison | None:
    """Why an ack names a notice that was not sent to its agency, or None. Referrals are not
    tracked: theirs is the one id a referral to this agency has."""
    acked = str(response.notice_id)
    if tracked is not None and tracked.agency_id != response.agency_id:
        return Poison(f"{response.agency_id} acknowledged a notice sent to {tracked.agency_id}")
    if tracked is None and acked != notice_id("referral", response.report_id,
                                              response.agency_id):
        return Poison(f"{response.agency_id} acknowledged {acked[:60]}, which was not sent to it")
    return None
