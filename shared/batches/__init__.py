"""How every tipline consumer handles what it reads: a fetched batch as one, at least once.

FastStream's batch subscriber hands a service up to `TIPLINE_BATCH_MAX_RECORDS` records at once
(`consume`, subscriber.py). Each concern has its module:

- decoding.py: each record into its contract model, its seal checked; what cannot be, aside;
- retries.py: the handler on the batch, then one record at a time after a failure, and the
  dead letters (`Delivery`, `Poison`);
- commits.py: the batch's own offsets once its effects are acknowledged (`Commits`), or with its
  records in one transaction (`Transactions`);
- publisher.py: what a batch publishes, in flight together, sealed, traced (`Publisher`);
- partitioner.py: which partition a report's records go to;
- resting.py: an idle subscriber fetching seldom, where the broker has no long poll
  (`Resting`);
- scope.py: the batch in hand, which `Delivery` opens around a handler for `Publisher` and
  `refuse`.
"""

from shared.batches.commits import Commits, Transactions, next_offsets
from shared.batches.decoding import UNREADABLE, Batch, Decoder, M, decode, header
from shared.batches.partitioner import RememberingPartitioner
from shared.batches.publisher import Item, Publisher, Sender, sealed
from shared.batches.resting import Resting
from shared.batches.retries import TRANSIENT, Delivery, Handler, Poison, dead_letter_of, in_rounds
from shared.batches.scope import refuse
from shared.batches.subscriber import consume, consumer_options, idle_wake_ms

__all__ = ["TRANSIENT", "UNREADABLE", "Batch", "Commits", "Decoder", "Delivery", "Handler",
           "Item", "M", "Poison", "Publisher", "RememberingPartitioner", "Resting", "Sender",
           "Transactions", "consume", "consumer_options", "dead_letter_of", "decode", "header",
           "idle_wake_ms", "in_rounds", "next_offsets", "refuse", "sealed"]
