"""The device twin's checkpoint and journal, in-process: samples once and in order across crashes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from twinloop.errors import TwinError
from twinloop.twins.actor import DeviceTwin

SAMPLES = [(float(k), {"power": 30.0, "ambient": 25.0, "fan": 1.0, "temperature": 25.0 + 0.02 * k})
           for k in range(12)]


def twin(checkpoint: Path | None = None) -> DeviceTwin:
    """A small twin (what Ray builds again, on the same path, after a crash)."""
    return DeviceTwin("m", "power_module_thermal", n_particles=64, seed=5,
                      checkpoint=str(checkpoint) if checkpoint else None)


def feed(t: DeviceTwin, first: int, last: int) -> None:
    """Samples ``first`` .. ``last`` (1-based sequence numbers)."""
    for seq in range(first, last + 1):
        t.assimilate(*SAMPLES[seq - 1], seq=seq)


@pytest.fixture(scope="module")
def uncrashed() -> dict[str, list[float | None]]:
    t = twin()
    feed(t, 1, len(SAMPLES))
    return t.history()


def test_a_repeated_sample_is_acknowledged_not_applied_again(tmp_path: Path,
                                                             uncrashed: dict[str, list[float | None]]) -> None:
    t = twin(tmp_path / "m.ckpt")
    feed(t, 1, 5)
    _, taken, _, _ = t.assimilate(*SAMPLES[4], seq=5)   # Ray retried call 5
    assert taken == 5 and len(t.history()["t"]) == 5
    feed(t, 6, len(SAMPLES))
    assert t.history() == uncrashed
    assert twin(tmp_path / "m.ckpt").history() == uncrashed  # and the journal holds each row once


def test_a_sample_ahead_of_a_missing_one_waits_for_it(tmp_path: Path,
                                                      uncrashed: dict[str, list[float | None]]) -> None:
    t = twin(tmp_path / "m.ckpt")
    feed(t, 1, 3)
    _, taken, _, _ = t.assimilate(*SAMPLES[4], seq=5)
    assert taken == 3 and 5 in t.waiting and t.history()["t"] == [0.0, 1.0, 2.0]
    t = twin(tmp_path / "m.ckpt")                        # a crash now keeps the waiting sample
    assert t.waiting.keys() == {5}
    _, taken, _, _ = t.assimilate(*SAMPLES[3], seq=4)    # the missing one arrives: both apply, in order
    assert taken == 5 and not t.waiting
    feed(t, 6, len(SAMPLES))
    assert t.history() == uncrashed


def test_a_crash_between_journal_and_checkpoint_leaves_no_stale_row(tmp_path: Path,
                                                                    uncrashed: dict[str, list[float | None]]) -> None:
    ckpt = tmp_path / "m.ckpt"
    t = twin(ckpt)
    feed(t, 1, 6)
    shutil.copy(ckpt, tmp_path / "at-6")
    feed(t, 7, 7)
    # What a crash after sample 7's journal row and before its checkpoint leaves: state at 6, journal at 7.
    shutil.copy(tmp_path / "at-6", ckpt)
    t = twin(ckpt)
    assert t.restored_at == 6 and len(t.history()["t"]) == 6
    feed(t, 7, 9)                                        # Ray retries call 7, then the run goes on
    t = twin(ckpt)                                       # a second crash
    assert t.restored_at == 9 and t.history()["t"] == [s[0] for s in SAMPLES[:9]]
    feed(t, 10, len(SAMPLES))
    assert t.history() == uncrashed
    assert twin(ckpt).history() == uncrashed


def test_a_torn_last_journal_row_is_dropped(tmp_path: Path, uncrashed: dict[str, list[float | None]]) -> None:
    ckpt = tmp_path / "m.ckpt"
    t = twin(ckpt)
    feed(t, 1, 6)
    shutil.copy(ckpt, tmp_path / "at-6")
    feed(t, 7, 7)
    journal = tmp_path / "m.ckpt.log"
    data = journal.read_bytes()
    journal.write_bytes(data[:-7])                       # the crash tore sample 7's row
    shutil.copy(tmp_path / "at-6", ckpt)
    t = twin(ckpt)
    assert t.restored_at == 6
    feed(t, 7, 9)
    t = twin(ckpt)                                       # rows written after the torn one read back
    assert t.history()["t"] == [s[0] for s in SAMPLES[:9]]
    feed(t, 10, len(SAMPLES))
    assert t.history() == uncrashed


def test_a_journal_shorter_than_its_checkpoint_is_an_error(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.ckpt"
    feed(twin(ckpt), 1, 4)
    journal = tmp_path / "m.ckpt.log"
    journal.write_bytes(journal.read_bytes()[:-1])
    with pytest.raises(TwinError, match="needs .* bytes of its journal"):
        twin(ckpt)


def test_a_fresh_twin_does_not_take_an_earlier_twins_journal(tmp_path: Path,
                                                             uncrashed: dict[str, list[float | None]]) -> None:
    (tmp_path / "m.ckpt.log").write_bytes(b"rows of an earlier run")
    t = twin(tmp_path / "m.ckpt")
    feed(t, 1, len(SAMPLES))
    assert twin(tmp_path / "m.ckpt").history() == uncrashed
