"""The HTML run report: self-contained, escaped, and every plot draws in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from twinloop.harness.html_report import render_html, write_html
from twinloop.harness.record import Event, RunRecord, Samples

DATA = Path(__file__).parent / "data"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def v1_record(**changes: object) -> RunRecord:
    return RunRecord.from_bytes((DATA / "run-v1.json").read_bytes()).model_copy(update=changes)


def cycling_record() -> RunRecord:
    """A real run of scenarios/power_module_thermal_cycling.yaml (load=30 W), as committed."""
    return RunRecord.from_bytes((DATA / "run-v2-thermal-cycling.json").read_bytes())


def test_the_report_is_self_contained_and_escapes_recorded_text() -> None:
    record = cycling_record()
    record.scenario.name = "<script>alert(1)</script>"
    record.events.append(Event(t=1.0, kind="mark", note="<img src=x onerror=alert(2)>"))
    page = render_html(record, {"cid": "QmX", "tx": "0xabc"})
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)" in page
    assert "<img src=x" not in page
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js is inline, no network at open
    assert page.count('class="plotly-graph-div"') == 3  # the signal, the twin's prediction, its health
    assert "QmX" in page and "PASS" in page


def test_records_without_samples_or_twins_still_render() -> None:
    empty = v1_record(samples=Samples(), twins={}, verdicts=[], outcome="error", error="rig broke")
    page = render_html(empty)
    assert "no samples" in page and "rig broke" in page and "ERROR" in page
    assert "plotly-graph-div" in render_html(v1_record())  # format 1 records still draw


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it from Debian)")
def test_every_plot_draws_in_headless_chromium(tmp_path: Path) -> None:
    path = write_html(cycling_record(), tmp_path / "report.html", {"cid": "QmX", "tx": "0xabc"})
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=15000"]
    dom = subprocess.run([*flags, "--dump-dom", path.as_uri()], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL).stdout
    graphs = dom.count('class="plotly-graph-div')
    drawn = len(re.findall(r'<svg class="main-svg"', dom))
    assert graphs == 3 and drawn >= 2 * graphs  # plotly draws two main-svg layers per plot
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1400,3000", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
