"""The HTML run report: self-contained, escaped, robust to odd records, and every plot draws in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from twinloop.harness.cli import main
from twinloop.harness.html_report import render_html, write_html
from twinloop.harness.record import Event, RunRecord, Samples, TwinResult, VerdictRecord

DATA = Path(__file__).parent / "data"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def v1_record(**changes: object) -> RunRecord:
    return RunRecord.from_bytes((DATA / "run-v1.json").read_bytes()).model_copy(update=changes)


def cycling_record() -> RunRecord:
    """A real run of scenarios/power_module_thermal_cycling.yaml (load=30 W), as committed."""
    return RunRecord.from_bytes((DATA / "run-v2-thermal-cycling.json").read_bytes())


def with_rul(record: RunRecord) -> RunRecord:
    """The cycling run with remaining useful life every 10th row, as a twin with rul_every logs it."""
    h = record.twins["module"].history
    n = len(h["t"])
    for q, factor in (("p05", 0.9), ("p50", 1.0), ("p95", 1.1)):
        h[f"rul_{q}_s"] = [factor * 3e7 * (1 - i / (2 * n)) if i % 10 == 0 else None for i in range(n)]
    h["rul_p95_s"][0] = None  # beyond the twin's horizon
    return record


def graph_divs(page: str) -> int:
    return page.count('class="plotly-graph-div"')


def test_the_report_is_self_contained_and_escapes_recorded_text() -> None:
    record = cycling_record()
    record.scenario.name = "<script>alert(1)</script>"
    record.events.append(Event(t=1.0, kind="mark", note="<img src=x onerror=alert(2)>"))
    page = render_html(record, {"cid": "QmX", "tx": "0xabc"})
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)" in page
    assert "<img src=x" not in page
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js is inline: nothing fetched when it opens
    assert not re.search(r"""src=["']?https?://""", page)
    assert page.count("* plotly.js v") == 1  # embedded once, not once per plot
    assert graph_divs(page) == 3  # the signal, the twin's prediction, its health
    assert "QmX" in page and "0xabc" in page and ">PASS<" in page


def test_one_plot_per_judged_signal_twin_output_health_and_rul() -> None:
    page = render_html(with_rul(cycling_record()))
    assert graph_divs(page) == 4
    for title in ("module.temperature", "module: twin prediction of temperature", "module: health",
                  "module: remaining useful life"):
        assert f'"text":"{title}"' in page
    assert '"text":"RUL (d)"' in page  # about a year: shown in days, not seconds
    assert "failure threshold" in page and "judged window" in page and "marginal" in page


def test_a_format_1_record_draws_its_samples_and_twin() -> None:
    page = render_html(v1_record())
    assert graph_divs(page) == 3  # no verdict names its signal in format 1: every sample column, then the twin
    assert '"text":"samples"' in page and "twin estimate" in page


def test_a_marginal_pass_and_an_error_are_flagged() -> None:
    record = cycling_record()
    record.verdicts[0].marginal = True
    assert "marginal</span>" in render_html(record) and ">PASS<" in render_html(record)
    error = v1_record(samples=Samples(), twins={}, verdicts=[], outcome="error", error="rig broke <here>")
    page = render_html(error)
    assert ">ERROR<" in page and ">PASS<" not in page and ">FAIL<" not in page
    assert "no samples" in page and "rig broke &lt;here&gt;" in page


@pytest.mark.parametrize("changes", [
    dict(samples=Samples(), twins={}, verdicts=[], events=[], outcome="error"),
    dict(samples=Samples(t=[0.0, 1.0], t_read=[0.0, 1.0], columns={"module.temperature": [None, None]})),
    dict(twins={"module": TwinResult(model="m", level="shadow", history={})}),
    dict(twins={"module": TwinResult(model="m", level="shadow", history={
        "t": [0.0, 1.0, 2.0], "health": [None, 0.5, None], "health_std": [None, None, 0.1],
        "predicted_temperature": [None, None, None], "rul_p50_s": [None, None, None]})}),
    dict(twins={"module": TwinResult(model="m", level="shadow", history={
        "t": [0.0, 1.0, 2.0], "rul_p50_s": [None, 4e5, None]})}),
    dict(verdicts=[VerdictRecord(name="x", outcome="error", value=None, limit="", unit="", signal="module.temperature",
                                 window=(None, 5.0), marginal_max=2.0, min=1.0),
                   VerdictRecord(name="y", outcome="fail", value=1.0, limit="", unit="", signal="nowhere.x")]),
    dict(events=[Event(t=3.0, kind="fault"), Event(t=3.0, kind="set", signal="a", value=None),
                 Event(t=99999.0, kind="interrupted")]),
], ids=["empty", "all-none-column", "twin-without-history", "twin-all-none", "rul-one-point", "odd-verdicts",
        "odd-events"])
def test_odd_but_valid_records_render(changes: dict[str, object]) -> None:
    page = render_html(cycling_record().model_copy(update=changes))
    assert page.rstrip().endswith("</html>")


def test_twinloop_report_writes_a_bundle_file_and_refuses_a_missing_one(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(DATA / "run-v1.json"), "-o", str(out), "--home", str(tmp_path / "home")]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "(of this file, not looked up)" in out.read_text()
    assert main(["report", str(tmp_path / "missing.json"), "--home", str(tmp_path / "home")]) == 2
    assert "missing.json" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it from Debian when root)")
def test_every_plot_draws_in_headless_chromium(tmp_path: Path) -> None:
    path = write_html(with_rul(cycling_record()), tmp_path / "report.html", {"cid": "QmX", "tx": "0xabc"})
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", path.as_uri()], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL).stdout
    graphs = dom.split('class="plotly-graph-div')[1:]
    assert len(graphs) == 4, dom[-2000:]
    assert all('<svg class="main-svg"' in g for g in graphs)  # each plot drew its own svg
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1400,4000", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
