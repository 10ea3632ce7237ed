"""The console's session cookie is Secure by a setting (behind a proxy that ends TLS the
console sees plain http, so the request's scheme cannot tell it), in-process on real Redis."""

import uuid
from pathlib import Path

import httpx
from pydantic import SecretStr

from services.console import sessions
from services.console.main import create_app
from shared.analysts import AnalystDirectory
from shared.settings import Settings
from shared.store import connect

PASSWORD = "synthetic-operator-password"


async def test_the_session_cookie_is_secure_by_setting_though_the_request_came_as_http(
    settings: Settings, tmp_path: Path
) -> None:
    staff = f"operator-{uuid.uuid4().hex[:6]}"
    redis = connect(settings)
    await AnalystDirectory(redis).add(staff, PASSWORD, role="operator")
    await redis.aclose()
    flags = {}
    for secure in (False, True):
        app = create_app(settings.model_copy(update={
            "tipline_console_session_secret": SecretStr("s" * 40), "tipline_console_port": 0,
            "tipline_console_secure_cookie": secure,
            # its store: each app its own (a store is held by one console at a time)
            "tipline_console_data_dir": tmp_path / f"console-{secure}"}))
        async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app.console_api),  # type: ignore[attr-defined]
                base_url="http://console") as http:
            answer = await http.post("/login", data={"analyst_id": staff, "password": PASSWORD},
                                     headers={"Origin": "http://console"})
        assert answer.status_code == 303, answer.text
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{sessions.COOKIE}=") and "HttpOnly" in cookie
        flags[secure] = "Secure" in cookie
    assert flags == {False: False, True: True}
