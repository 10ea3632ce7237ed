"""With Redis away, intake answers 503 with Retry-After (never a bare 500), on both APIs."""

import httpx

from services.intake.main import create_app
from shared.settings import Settings
from tipline.stack import free_port


async def test_redis_away_is_503_with_retry_after(settings: Settings) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app(settings.model_copy(update={"redis_url": nowhere}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://intake") as http:
        v1 = await http.get("/v1/reports/1", auth=("esp", "secret"))
        assert v1.status_code == 503
        assert v1.headers["Retry-After"] == "2"
        assert v1.json()["detail"] == "temporarily unavailable, retry"

        ispws = await http.get("/ispws/status", auth=("esp", "secret"))
        assert ispws.status_code == 503
        assert ispws.headers["Retry-After"] == "2"
        assert "<responseCode>1000</responseCode>" in ispws.text
        assert ispws.headers["Request-ID"]


async def test_redis_away_is_a_page_saying_try_again_on_the_public_form(settings: Settings
                                                                         ) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(settings.model_copy(update={"redis_url": nowhere}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://intake") as http:
        for answer in (await http.get("/report"),
                       await http.post("/report", data={"description": "synthetic"})):
            assert answer.status_code == 503
            assert answer.headers["Retry-After"] == "2"
            assert answer.headers["content-type"].startswith("text/html")
            assert "try again in a moment" in answer.text.lower()
            assert answer.headers["Request-ID"] in answer.text  # the reference to quote
