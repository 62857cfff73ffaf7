"""The HTML report opens in a real headless browser, offline, and draws one timeline bar per invocation.

Debian's chromium drives it (`.ci/run` installs it). The screenshot is kept
as a test artefact in `test-artifacts/report-timeline.png`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from support.data import ids_dataset

import squall
from squall import api
from squall.observe.report_html import render

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1100,1400",
]

# Measures what the browser laid out: each bar's box, inside the timeline, on its worker's lane.
_PROBE = """<script>
const svg = document.getElementById('timeline').getBoundingClientRect();
const bars = [...document.querySelectorAll('#timeline rect.bar')].map(b => {
  const r = b.getBoundingClientRect();
  return {chunk: +b.dataset.chunk, attempt: +b.dataset.attempt, worker: +b.dataset.worker, width: r.width, height: r.height,
          inside: r.left >= svg.left && r.right <= svg.right + 1 && r.top >= svg.top && r.bottom <= svg.bottom, top: r.top,
          fill: getComputedStyle(b).fill};
});
const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(bars); document.body.append(pre);
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed: `apt-get install -y chromium` (.ci/run does)")
def test_the_report_opens_offline_in_a_headless_browser_and_draws_one_bar_per_invocation_on_its_worker_lane(tmp_path, monkeypatch):
    # A second each, so both workers take chunks even when one starts seconds after the other on a loaded machine.
    monkeypatch.setenv("FAULT_SLEEP", "1.0")
    ids_dataset(tmp_path / "in", 6_000, row_group_size=500)
    spec = squall.JobSpec(
        model="faultmodels:steady", input=[str(tmp_path / "in")], output=str(tmp_path / "out"), key=["id"], features=["id_copy"],
        chunk_rows=500, workers=2, fork=False, job_id="drawn",
    )
    result = squall.run(spec)
    assert result.state == "SUCCEEDED" and result.invocations == 12
    html = render(api.report("drawn"))
    assert not re.search(r"""(src|href)\s*=|@import|url\((?!#)""", html), "the report must not fetch anything"
    page = tmp_path / "report.html"
    page.write_text(html)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-timeline.png"
    shot.unlink(missing_ok=True)
    taken = _chromium(f"--screenshot={shot}", page.as_uri())
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", taken.stderr
    print(f"screenshot: {shot}")

    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _PROBE + "</body>"))
    dom = _chromium("--dump-dom", probe.as_uri()).stdout
    probed = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert probed is not None, dom
    bars = json.loads(probed.group(1).replace("&quot;", '"'))
    assert len(bars) == result.invocations == len(re.findall(r"<rect class=\"bar\"", dom))
    assert {(b["chunk"], b["attempt"]) for b in bars} == {(c, 1) for c in range(12)}
    assert all(b["width"] >= 1 and b["height"] > 5 and b["inside"] for b in bars)
    assert {b["fill"] for b in bars} == {"rgb(46, 158, 91)"}  # every invocation ok: green
    lanes = {b["worker"]: {b2["top"] for b2 in bars if b2["worker"] == b["worker"]} for b in bars}
    assert set(lanes) == {0, 1} and all(len(tops) == 1 for tops in lanes.values())
    assert lanes[0] != lanes[1]
    assert dom.count('class="cold"') == 2  # two workers started from scratch: two cold starts marked
