"""The batch delivery contract, without a broker: decode, dead letters, isolation, the commit."""

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError
from opentelemetry.trace import Tracer
from pydantic import BaseModel

from shared import batches
from shared.batches import Commits, Decoder, Delivery, Poison, Publisher, in_rounds, refuse
from shared.contracts import DeadLetter
from shared.settings import Settings
from shared.telemetry import tracer_provider
from shared.topics import DEAD_LETTERS
from tests.fake_producer import FakeProducer


class Step(BaseModel):
    report_id: str
    n: int


TOPIC = "tipline.test"


def record(offset: int, value: bytes, key: str = "r1", partition: int = 0) -> ConsumerRecord:
    return ConsumerRecord(TOPIC, partition, offset, 0, 0, key.encode(), value, None,
                          len(key), len(value), ())


def step(report_id: str, n: int, offset: int, partition: int = 0) -> ConsumerRecord:
    return record(offset, json.dumps({"report_id": report_id, "n": n}).encode(), report_id,
                  partition)


@dataclass
class Subscriber:
    running: bool = True


@dataclass
class FakeBroker:
    """Publishes dead letters, failing the first `failures` times."""

    failures: int = 0
    letters: list[DeadLetter] = field(default_factory=list)
    subscribers: list[Subscriber] = field(default_factory=lambda: [Subscriber()])

    async def publish(self, body: Any, topic: str, key: bytes | None = None) -> None:
        assert topic == DEAD_LETTERS
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        self.letters.append(body)


@dataclass
class Consumer:
    """Takes commits of offsets, each held until `release` is set, or refused as told."""

    assigned: set[TopicPartition] = field(default_factory=lambda: {TopicPartition(TOPIC, 0)})
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    refuse: int = 0

    def __post_init__(self) -> None:
        self.release.set()

    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset: the last commit's, or none yet."""
        return next((c[tp] for c in reversed(self.commits) if tp in c), None)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.release.wait()
        if self.refuse:
            self.refuse -= 1
            raise CommitFailedError("the group rebalanced")
        self.commits.append(offsets)


@dataclass
class Message:
    raw_message: tuple[ConsumerRecord, ...]
    consumer: Consumer = field(default_factory=Consumer)

    @property
    def acked(self) -> int:  # commits made
        return len(self.consumer.commits)

    @property
    def nacked(self) -> int:  # rewound to the batch's first records: fetched again
        return int(bool(self.consumer.seeks))


@dataclass
class Handler:
    """Records each call; fails as told."""

    fail: Any = None  # a function of the events: an exception to raise, or None
    calls: list[list[tuple[str, int]]] = field(default_factory=list)

    async def __call__(self, events: list[Step]) -> None:
        self.calls.append([(e.report_id, e.n) for e in events])
        if self.fail and (exc := self.fail(events)):
            raise exc


SETTINGS = Settings(tipline_retry_backoff_s=0.0, tipline_max_attempts=3)


@dataclass
class Transactions(FakeProducer, batches.Transactions):
    """Stands in for a subscriber's transactional producer: says what was begun, committed
    (with which offsets) and aborted, in order; what is sent is read only once committed."""

    committed_past: dict[TopicPartition, int] = field(default_factory=dict)
    log: list[Any] = field(default_factory=list)
    pending: list[tuple[str, bytes]] = field(default_factory=list)
    committed: list[tuple[str, bytes]] = field(default_factory=list)
    service: str = "test"
    seals: None = None

    lose_answer: int = 0  # commits whose answer is lost though they were made

    async def ready(self) -> "Transactions":
        return self

    async def begin(self) -> "Transactions":
        self.log.append("begin")
        return self

    async def commit(self, consumer: Consumer, offsets: dict[TopicPartition, int]) -> None:
        self.log.append({tp.partition: offset for tp, offset in offsets.items()})
        self.committed += self.pending
        self.pending = []
        consumer.commits.append(offsets)  # the group's offsets, in the transaction
        self.note_committed(offsets)
        if self.lose_answer:
            self.lose_answer -= 1
            raise KafkaConnectionError("the coordinator failed over")

    async def abort(self) -> None:
        self.log.append("abort")
        self.pending = []

    async def deliver(self, topic: str, key: bytes, value: bytes) -> None:
        self.pending.append((topic, value))

    async def sender(self) -> "Transactions":
        raise AssertionError("in a transaction, records go out on its producer")

    def tracer(self) -> Tracer:
        return tracer_provider(SETTINGS, "test").get_tracer("test")

    def letters(self) -> list[int]:
        """The offsets of the dead letters committed."""
        return [DeadLetter.model_validate_json(value).offset for topic, value in self.committed
                if topic == DEAD_LETTERS]


async def deliver(records: list[ConsumerRecord], handler: Handler,
                  broker: FakeBroker | None = None, commits: Commits | None = None,
                  consumer: Consumer | None = None,
                  transactions: Transactions | None = None) -> tuple[Message, FakeBroker]:
    """One batch through Delivery; its commit made before this returns unless `commits` (the
    subscriber's own, across batches) is given."""
    broker = broker or FakeBroker()
    message = Message(tuple(records), consumer or Consumer())
    decoder = Decoder(Step, seals=None)
    await decoder(message)  # type: ignore[arg-type]
    letters = Publisher(transactions) if transactions else None  # type: ignore[arg-type]
    delivery = Delivery(broker, SETTINGS, "test", commits,  # type: ignore[arg-type]
                        transactions, letters)
    await delivery(message, decoder.take(message), handler)  # type: ignore[arg-type]
    if commits is None:
        await delivery.commits.drain()
    return message, broker


async def test_a_batch_is_handled_as_one_and_committed_once() -> None:
    handler = Handler()
    message, broker = await deliver([step("a", 1, 0), step("b", 1, 1), step("a", 2, 2)], handler)
    assert handler.calls == [[("a", 1), ("b", 1), ("a", 2)]]
    assert (message.acked, message.nacked, broker.letters) == (1, 0, [])
    assert message.consumer.commits == [{TopicPartition(TOPIC, 0): 3}]  # after the last record


async def test_a_commit_covers_the_batchs_own_records_on_partitions_still_assigned() -> None:
    # Partition 1 was revoked while the batch was handled: its new owner commits it.
    records = [step("a", 1, 7), record(8, b"{not json"), step("b", 1, 4, partition=1)]
    message, _ = await deliver(records, Handler())
    assert message.consumer.commits == [{TopicPartition(TOPIC, 0): 9}]


async def test_the_next_batch_is_handled_while_a_commit_travels_and_commits_keep_order() -> None:
    consumer, commits, handler = Consumer(), Commits("test"), Handler()
    consumer.release.clear()  # the broker is slow to answer commits
    for n in range(2):  # neither waits for a commit
        await asyncio.wait_for(deliver([step("ab"[n], 1, n)], handler, commits=commits,
                                       consumer=consumer), 5)
    assert handler.calls == [[("a", 1)], [("b", 1)]] and consumer.commits == []
    consumer.release.set()
    await commits.drain()
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 1}, {TopicPartition(TOPIC, 0): 2}]


async def test_once_stopping_a_batch_returns_only_after_its_commit() -> None:
    consumer, commits = Consumer(), Commits("test")
    await commits.drain()  # the service is stopping
    await deliver([step("a", 1, 0)], Handler(), commits=commits, consumer=consumer)
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 1}]


async def test_a_refused_commit_is_left_to_the_next_one() -> None:
    consumer, commits = Consumer(refuse=1), Commits("test")
    await deliver([step("a", 1, 0)], Handler(), commits=commits, consumer=consumer)
    await deliver([step("b", 1, 1)], Handler(), commits=commits, consumer=consumer)
    await commits.drain()
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 2}]


async def test_an_unreadable_record_is_dead_lettered_alone() -> None:
    handler = Handler()
    records = [step("a", 1, 0), record(1, b"{not json"), record(2, b'{"x": 1}'), step("b", 1, 3)]
    message, broker = await deliver(records, handler)
    assert handler.calls == [[("a", 1), ("b", 1)]]
    assert [letter.offset for letter in broker.letters] == [1, 2]
    assert all(letter.error.startswith("ValidationError") for letter in broker.letters)
    assert message.acked == 1


async def test_a_transient_failure_commits_nothing_and_the_batch_comes_again() -> None:
    handler = Handler(fail=lambda events: ConnectionError("Redis away"))
    message, broker = await deliver([step("a", 1, 0), step("b", 1, 1)], handler)
    assert (message.acked, message.nacked) == (0, 1)
    assert broker.letters == [] and len(handler.calls) == 1


async def test_a_failing_record_gets_its_attempts_then_a_dead_letter() -> None:
    def bug(events: list[Step]) -> Exception | None:
        return ValueError("a bug") if any(e.report_id == "bad" for e in events) else None

    handler = Handler(fail=bug)
    message, broker = await deliver([step("a", 1, 0), step("bad", 1, 1), step("b", 1, 2)],
                                    handler)
    alone = [c for c in handler.calls if len(c) == 1]
    assert alone.count([("bad", 1)]) == SETTINGS.tipline_max_attempts
    assert alone.count([("a", 1)]) == alone.count([("b", 1)]) == 1
    assert [(letter.offset, letter.error) for letter in broker.letters] == [
        (1, "ValueError: a bug")]
    assert (message.acked, message.nacked) == (1, 0)


async def test_poison_goes_to_the_dead_letters_at_once() -> None:
    handler = Handler(fail=lambda events: Poison("no such agency"))
    message, broker = await deliver([step("a", 1, 0)], handler)
    assert handler.calls == [[("a", 1)]]
    assert [letter.error for letter in broker.letters] == ["Poison: no such agency"]
    assert message.acked == 1


async def test_a_refused_event_is_dead_lettered_and_the_rest_committed() -> None:
    class Refusing(Handler):
        async def __call__(self, events: list[Step]) -> None:
            await super().__call__(events)
            for event in events:
                if event.report_id == "forged":
                    refuse(event, Poison("not signed"))

    message, broker = await deliver([step("a", 1, 0), step("forged", 1, 1)], Refusing())
    assert [(letter.offset, letter.error) for letter in broker.letters] == [
        (1, "Poison: not signed")]
    assert message.acked == 1


async def test_a_dead_letter_that_cannot_be_published_is_retried_in_place() -> None:
    broker = FakeBroker(failures=2)
    message, broker = await deliver([record(0, b"garbage"), step("a", 1, 1)], Handler(), broker)
    assert len(broker.letters) == 1 and message.acked == 1


async def test_stopping_while_a_dead_letter_waits_commits_nothing() -> None:
    broker = FakeBroker(failures=100, subscribers=[Subscriber(running=False)])
    message, broker = await deliver([record(0, b"garbage")], Handler(), broker)
    assert (message.acked, message.nacked, broker.letters) == (0, 1, [])


@dataclass
class Producer(FakeProducer):
    """Acknowledges every record at once, keeping what it was given, in order."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)

    async def deliver(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, value))


@dataclass
class FakeSender:
    service: str = "test"
    seals: None = None
    producer: Producer = field(default_factory=Producer)

    async def sender(self) -> Producer:
        return self.producer

    def tracer(self) -> Tracer:
        return tracer_provider(SETTINGS, "test").get_tracer("test")


async def test_what_is_left_for_later_goes_after_the_next_send_or_before_the_commit() -> None:
    sender = FakeSender()
    publish = Publisher(sender)  # type: ignore[arg-type]

    class Telling(Handler):
        async def __call__(self, events: list[Step]) -> None:
            await publish.later([(b"fact 1", "facts", "test")])
            await publish.send([(b"event", "events", "a")])
            await publish.later([(b"fact 2", "facts", "test")])
            await super().__call__(events)

    message, _ = await deliver([step("a", 1, 0)], Telling())
    assert sender.producer.sent == [("events", b"event"), ("facts", b"fact 1"),
                                    ("facts", b"fact 2")]
    assert message.acked == 1
    # A batch that fails for want of Redis does not send what it left for later after its last
    # send: the batch comes again, and with it those records.
    sender.producer.sent.clear()
    message, _ = await deliver([step("a", 1, 0)], Telling(
        fail=lambda events: ConnectionError("Redis away")))
    assert sender.producer.sent == [("events", b"event"), ("facts", b"fact 1")]
    assert (message.acked, message.nacked) == (0, 1)


def test_rounds_keep_each_reports_order() -> None:
    events = [Step(report_id=r, n=n) for r, n in (("a", 1), ("b", 1), ("a", 2), ("a", 3),
                                                  ("c", 1), ("b", 2))]
    rounds = in_rounds(events, key=lambda e: e.report_id)
    assert [[(e.report_id, e.n) for e in r] for r in rounds] == [
        [("a", 1), ("b", 1), ("c", 1)], [("a", 2), ("b", 2)], [("a", 3)]]


async def test_in_a_transaction_a_batch_commits_its_offsets_with_its_records() -> None:
    transactions, handler = Transactions(), Handler()
    message, _ = await deliver([step("a", 1, 0), step("b", 1, 1)], handler,
                               transactions=transactions)
    assert transactions.log == ["begin", {0: 2}]
    assert message.consumer.commits == [{TopicPartition(TOPIC, 0): 2}]  # in the transaction


async def test_in_a_transaction_a_failed_batch_is_aborted_then_each_record_commits_alone() -> None:
    def bug(events: list[Step]) -> Exception | None:
        return ValueError("a bug") if any(e.report_id == "bad" for e in events) else None

    transactions = Transactions()
    await deliver(
        [step("a", 1, 0), record(1, b"{not json"), step("bad", 1, 2), step("b", 1, 3)],
        Handler(fail=bug), transactions=transactions)
    # What the failed batch sent is never read; then each record, its own offset with its own
    # outcome, in offset order: a, the unreadable one's dead letter, bad's attempts and its dead
    # letter, b.
    assert transactions.log == ["begin", "abort", "begin", {0: 1}, "begin", {0: 2},
                                *["begin", "abort"] * SETTINGS.tipline_max_attempts,
                                "begin", {0: 3}, "begin", {0: 4}]
    assert transactions.letters() == [1, 2]  # each once, though the batch's try made one too


async def test_in_a_transaction_a_transient_failure_aborts_and_the_batch_comes_again() -> None:
    transactions = Transactions()
    message, _ = await deliver([step("a", 1, 0)], Handler(
        fail=lambda events: ConnectionError("Redis away")), transactions=transactions)
    assert transactions.log == ["begin", "abort"] and message.nacked == 1


async def test_what_waits_for_delivery_runs_after_the_commit_and_never_after_an_abort() -> None:
    transactions, done = Transactions(), list[Any]()
    publish = Publisher(FakeSender())  # type: ignore[arg-type]

    class Recording(Handler):
        async def __call__(self, events: list[Step]) -> None:
            await publish.once_delivered(lambda: _record(done, transactions.log[-1]))
            await super().__call__(events)

    await deliver([step("a", 1, 0)], Recording(), transactions=transactions)
    assert done == [{0: 1}]  # ran once the commit was made
    await deliver([step("a", 1, 1)], Recording(fail=lambda e: ConnectionError("Redis away")),
                  transactions=transactions)
    assert done == [{0: 1}]  # aborted: never ran
    # Outside a transaction each send was acknowledged when it returned: it runs at once.
    await deliver([step("a", 1, 2)], Recording())
    assert len(done) == 2


async def _record(done: list[Any], what: Any) -> None:
    done.append(what)


async def test_a_commit_made_though_its_answer_was_lost_is_not_handled_again() -> None:
    """The batch goes on from the group's committed offsets: past it, had its transaction
    committed; back to its start, had it not."""
    transactions = Transactions(lose_answer=1)
    message, _ = await deliver([step("a", 1, 4), step("b", 1, 5)], Handler(),
                               transactions=transactions)
    assert message.consumer.seeks == [(TopicPartition(TOPIC, 0), 6)]  # after it, not again
    aborted = Transactions()
    message, _ = await deliver([step("a", 1, 4)], Handler(
        fail=lambda events: ConnectionError("Redis away")), transactions=aborted)
    assert message.consumer.seeks == [(TopicPartition(TOPIC, 0), 4)]  # none yet: its start


async def test_records_this_copy_committed_are_passed_over_when_a_rebalance_brings_them_again(
) -> None:
    """A rebalance just as a transaction committed hands back the offsets from before it (the
    broker shows the new ones once it has written the commit's markers): those records were
    handled here, and are not handled twice."""
    transactions, handler = Transactions(), Handler()
    await deliver([step("a", 1, 0), step("b", 1, 1)], handler, transactions=transactions)
    await deliver([step("a", 1, 0), step("b", 1, 1), step("c", 1, 2)], handler,
                  transactions=transactions)  # fetched again from offset 0
    assert handler.calls == [[("a", 1), ("b", 1)], [("c", 1)]]
    assert transactions.log == ["begin", {0: 2}, "begin", {0: 3}]


def test_a_handler_of_more_than_its_batch_is_refused_at_registration() -> None:
    """Its signature is the subscriber's contract (and the AsyncAPI document's): one list."""
    from faststream.kafka import KafkaBroker

    from shared.batches import consume

    async def on_steps(events: list[Step], extra: int = 0) -> None: ...

    register = consume(KafkaBroker(), SETTINGS, "test", TOPIC, group="g", model=Step, seals=None)
    with pytest.raises(TypeError, match="one parameter"):
        register(on_steps)
