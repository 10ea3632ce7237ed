"""`tipline console-bench` at a small size: every kind of console page answers over HTTP from a
read model of synthetic reports, and the figures it prints are there."""

from tipline.consolebench import render, run


async def test_every_page_answers_from_a_synthetic_read_model() -> None:
    result = await run(reports=300, requests=3, seed=5)
    assert result["reports"] == 300 and result["records"] > 300 * 3
    assert set(result["pages"]) >= {"overview", "report", "agency", "search id", "search ESP",
                                    "live fragment", "live version"}
    assert all(row["requests"] == 3 for row in result["pages"].values())
    assert result["rss_mb_peak"] >= result["rss_mb_empty"] > 0
    assert "p95 ms" in render(result)
