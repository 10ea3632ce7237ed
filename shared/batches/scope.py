"""The batch in hand: what a handler's publishes, refusals and after-commit actions belong to.

`Delivery` opens the scope around each call of a handler (`handling`); `Publisher` and `refuse`
read it. A contextvar, as OpenTelemetry's current span: a service's subscribers handle their
batches concurrently on one event loop, each in its own task, and the handlers' signatures stay
the contract (`list[Model]`), with nothing of the delivery in them.
"""

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer

if TYPE_CHECKING:
    from shared.batches.decoding import Batch
    from shared.batches.publisher import Item, Publisher


@dataclass
class Scope:
    """What one call of a handler leaves for its delivery to finish."""

    batch: "Batch"
    refused: list[tuple[Any, Exception]] = field(default_factory=list)
    later: list["Item"] = field(default_factory=list)  # Publisher.later: for the next send
    later_by: "Publisher | None" = None
    # In a transaction (Transactions): the producer its records go out on, and what waits for
    # them to be committed (Publisher.once_delivered).
    producer: AIOKafkaProducer | None = None
    committed: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


_current: ContextVar[Scope | None] = ContextVar("tipline_batch_scope", default=None)


@contextlib.contextmanager
def handling(scope: Scope) -> Iterator[Scope]:
    """`scope` is the batch in hand until the block ends."""
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def current() -> Scope | None:
    """The batch in hand, or None outside a handler (an HTTP request, a timer)."""
    return _current.get()


def refuse(event: Any, reason: Exception) -> None:
    """Called by a handler for one event of its batch it must refuse (a forged response, say):
    the event's record goes to the dead-letter topic with the reason, and the batch goes on."""
    scope = current()
    if scope is None:
        raise RuntimeError("refuse() is for a handler of a batch")
    scope.refused.append((event, reason))
