"""A service whose HTTP port another process holds stops the start, saying why: the port
answering is not the service serving (a CI run once took such a stack for up, and ten tests
failed against an intake that had exited)."""

import socket
from pathlib import Path

import pytest

from tipline.stack import Stack, create_topics, start_services


def test_a_port_held_by_another_process_stops_the_start_with_the_reason(
    servers: Stack, tmp_path: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        stack = Stack(kafka=servers.kafka, redis=servers.redis,
                      http=f"http://127.0.0.1:{port}", workdir=tmp_path)
        create_topics(stack)
        try:
            with pytest.raises(RuntimeError, match="intake exited") as refused:
                start_services(stack, ("intake",))
        finally:
            stack.stop()
    assert "address already in use" in str(refused.value)
