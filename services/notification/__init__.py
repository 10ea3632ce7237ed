"""The notification context: the referral ledger (ledger.py), the notices agencies receive
(notices.py builds them, sending.py signs, tracks and publishes them), the corrections and
amendments awaiting their agency's acknowledgement (awaiting.py), and the one flow that runs
them all, from claim to ack (flow.py).

Not a service of its own: its only writers are the referral and the retraction services, which
run its steps as atomic Lua scripts, so they never interleave inside a step. No other service
reads or writes its keys (docs/architecture.md, "Who owns what"); what others need of it travels
in events.
"""
