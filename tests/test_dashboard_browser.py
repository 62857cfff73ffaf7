"""The dashboard in a real headless browser (Debian's chromium, driven by playwright): it loads, a running
job's progress bar moves, and the job page draws throughput and the chunk timeline.

`.ci/run` installs chromium; without it the test is skipped with that reason.
Screenshots are kept as test artefacts in `test-artifacts/`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from playwright import sync_api
from support.data import ids_dataset
from support.service import live_service

from squall.service.config import ServeConfig

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TOKEN = "dash-token"


def _progress(page, job_id: str) -> float:  # type: ignore[no-untyped-def]
    return float(page.eval_on_selector(f'tr[data-job="{job_id}"] progress', "p => p.value"))


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed: `apt-get install -y chromium` (.ci/run does)")
def test_the_dashboard_shows_a_running_job_moving_and_its_timeline(squall_home, tmp_path, monkeypatch):
    monkeypatch.setenv("FAULT_SLEEP", "0.5")
    ids_dataset(tmp_path / "in", 4_000, row_group_size=100)
    spec = {"model": "faultmodels:steady", "input": [str(tmp_path / "in")], "output": str(tmp_path / "out"), "key": ["id"],
            "features": ["id_copy"], "chunk_rows": 100, "workers": 2, "job_id": "slow"}
    # A second job with a dead letter: its first chunk's worker crashes, and it has one attempt.
    (tmp_path / "schedule.json").write_text(json.dumps({"0": ["crash"]}))
    monkeypatch.setenv("FAULT_SCHEDULE", str(tmp_path / "schedule.json"))
    monkeypatch.setenv("FAULT_CHUNK_ROWS", "500")
    ids_dataset(tmp_path / "few", 1_000, row_group_size=500)
    deadly = {**spec, "model": "faultmodels:scheduled", "input": [str(tmp_path / "few")], "output": str(tmp_path / "dead-out"),
              "chunk_rows": 500, "batch_size": 500, "workers": 1, "max_attempts": 1, "max_dead_chunks": 1, "job_id": "deadly"}
    config = ServeConfig(state_dir=str(squall_home), token=TOKEN, max_concurrency=3)
    ARTIFACTS.mkdir(exist_ok=True)
    with live_service(config) as (url, _):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.post(f"{url}/jobs", json=deadly, headers=auth).status_code == 201
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/jobs/deadly", headers=auth).json()["state"] != "PARTIAL" and time.monotonic() < deadline:
            time.sleep(0.1)
        created = httpx.post(f"{url}/jobs", json=spec, headers=auth)
        assert created.status_code == 201
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1150, "height": 900})
                fetched: list[str] = []
                page.on("request", lambda request: fetched.append(request.url))
                errors: list[str] = []
                page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"{url}/?token={TOKEN}")
                try:
                    page.wait_for_function("""() => { const p = document.querySelector('tr[data-job="slow"] progress');
                                                     return p && p.value > 0 && p.value < 1; }""", timeout=60_000)
                except sync_api.Error:
                    raise AssertionError(f"no moving progress bar; errors {errors}; page {page.inner_text('body')[:2000]}")
                first = _progress(page, "slow")
                page.wait_for_function(f"""() => document.querySelector('tr[data-job="slow"] progress').value > {first}""",
                                       timeout=30_000)
                second = _progress(page, "slow")
                assert 0 < first < second
                # The page polls every second: what it shows settles within a poll or two.
                page.wait_for_function("""() => document.querySelector('tr[data-job="slow"] .state').innerText === 'RUNNING'
                                               && document.querySelector('#pool b').innerText === '2 / 3'""", timeout=10_000)
                assert page.inner_text('tr[data-job="slow"] .state') == "RUNNING"
                assert page.inner_text("#pool b") == "2 / 3"  # the running job holds two of the pool's three workers
                page.screenshot(path=str(ARTIFACTS / "dashboard-jobs.png"), full_page=True)

                page.click('tr[data-job="slow"] a')
                page.wait_for_selector("#timeline rect.bar", timeout=30_000)
                page.wait_for_selector("#throughput polyline", timeout=30_000)
                page.wait_for_function("() => document.querySelectorAll('#timeline rect.bar').length >= 4", timeout=30_000)
                assert "Dead letters" in page.inner_text("#view")
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

                page.goto(f"{url}/#/jobs/deadly")
                page.wait_for_selector("#dlq", timeout=30_000)
                dead = page.inner_text("#dlq")
                assert "lost" in dead and "worker" in dead  # the outcome and the reason of the dead attempt
                assert page.eval_on_selector_all("#timeline rect.bar", "bars => bars.map(b => b.dataset.outcome).sort()") == ["lost", "ok"]
                page.screenshot(path=str(ARTIFACTS / "dashboard-dead-letters.png"), full_page=True)
            finally:
                browser.close()
    assert all(u.startswith(url) for u in fetched), "the dashboard must not fetch anything from elsewhere"
    shot = ARTIFACTS / "dashboard.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")
