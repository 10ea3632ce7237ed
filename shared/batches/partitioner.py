"""Which partition a keyed record goes to: the producer's own choice, remembered."""

from aiokafka.partitioner import DefaultPartitioner, murmur2


class RememberingPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client; a random partition
    for no key), remembering recent keys' hashes: murmur2 is pure Python and a report's key goes
    out several times a hop."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        found = self._hashes.get(key)
        if found is None:
            if len(self._hashes) >= self._size:
                self._hashes.clear()
            found = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[found % len(all_partitions)]
