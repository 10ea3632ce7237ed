"""The producers' partitioner sends every key where aiokafka's default (Java's murmur2) does, so a
report's records land in the partition any Kafka client would pick."""

import os

from aiokafka.partitioner import DefaultPartitioner

from shared.kafka import RememberingPartitioner


def test_every_key_goes_where_the_default_sends_it() -> None:
    remembering, default = RememberingPartitioner(size=64), DefaultPartitioner()
    keys = [os.urandom(n % 40 + 1) for n in range(2000)] + [b"r-1", b"r-1", b"validation"]
    for partitions in ([0], list(range(4)), list(range(8)), [3, 5, 9]):
        for key in keys * 2:  # the second time from memory (or after it was cleared)
            assert remembering(key, partitions, partitions) == default(key, partitions,
                                                                      partitions)


def test_no_key_goes_to_an_available_partition() -> None:
    assert RememberingPartitioner()(None, [0, 1, 2, 3], [2]) == 2
