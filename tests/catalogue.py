"""What the catalogue (shared.topics.CATALOGUE) lets a service publish, for the tests that hold
the services to it."""

from shared import topics


def may_write(service: str, topic: str) -> bool:
    """Whether the catalogue lets `service` publish to `topic` (an agency's notice topic by the
    pattern's row)."""
    return any(service in row.writers and (
        row.name == topic if row.prefix is None else topics.agency_of_topic(topic) is not None)
        for row in topics.CATALOGUE)
