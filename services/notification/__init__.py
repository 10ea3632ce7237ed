"""The notification context: the referral ledger, the notices agencies receive (built, signed,
sent) and the outbox that follows each correction and amendment until its agency acknowledges it.

Not a service of its own: its only writers are the referral and the retraction services, which
run its steps as atomic Lua scripts, so they never interleave inside a step. No other service
reads or writes its keys (docs/architecture.md, "Who owns what"); what others need of it travels
in events.
"""
