"""StageTimes: exclusive nesting, the stage table and its JSON form (no timed assertions)."""

from __future__ import annotations

from e2b_artifacts.stages import IMAGE_STAGES, StageTimes


def test_nested_stage_counted_once_in_run_order() -> None:
    times = StageTimes()
    with times.stage("inject"), times.stage("fsck"):
        pass
    with times.stage("manifest"):
        pass
    with times.stage("inject"):  # a second visit adds to the first
        pass
    times.finish()
    assert list(times.seconds) == ["inject", "fsck", "manifest"]
    assert all(value >= 0 for value in times.seconds.values())
    doc = times.to_json()
    assert list(doc) == ["inject", "fsck", "manifest", "other", "total"]
    # exclusive nesting: the stages and "other" add up to the total (rounding aside)
    assert abs(sum(v for k, v in doc.items() if k != "total") - doc["total"]) < 0.005
    table = times.table()
    assert table[0].split() == ["stage", "seconds", "share"]
    assert [line.split()[0] for line in table[1:]] == ["inject", "fsck", "manifest", "other", "total"]


def test_a_stage_that_raises_is_still_recorded() -> None:
    times = StageTimes()
    try:
        with times.stage("mke2fs"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert "mke2fs" in times.seconds


def test_image_stages_name_the_issue_list() -> None:
    assert {"resolve", "decompress", "flatten", "mke2fs", "xattrs", "fidelity", "inject", "fsck"} <= set(IMAGE_STAGES)
