"""The slot timeline's arithmetic (search/slots.py): final runs of the search's own protocol
count like trials in the slot record, and show apart in the progress line."""

from __future__ import annotations

from search.slots import progress_line, read_run, record_final_run, slot_usage


def test_final_runs_count_in_the_slot_record_and_show_apart_in_the_progress_line(tmp_path):
    """Planted bugs caught: `record_final_run` writing no `final` mark (the progress line would
    count the final run among CK's trials: `CK 0▶ 2✓`), or only its start (the slot record
    would hold it busy until `until`)."""
    timeline = tmp_path / "timeline.jsonl"
    run = {"event": "run", "t": 100.0, "slots": 2, "targets": ["CK", "RAF"]}
    timeline.write_text("".join(f"{line}\n" for line in (
        '{"event": "run", "t": 100.0, "slots": 2, "targets": ["CK", "RAF"]}',
        '{"event": "start", "t": 100.0, "target": "CK", "trial": "a"}',
        '{"event": "start", "t": 100.0, "target": "RAF", "trial": "b"}',
        '{"event": "end", "t": 110.0, "target": "CK", "trial": "a"}')))
    record_final_run(timeline, "CK", "CK/lacmfer/seed0", 110.0, 130.0)
    mark, events = read_run(timeline)
    assert mark == run
    assert progress_line(mark, events) == "slots 1/2 busy | CK 0▶ 1✓ final 1✓  RAF 1▶ 0✓"
    usage = slot_usage(mark, events, until=140.0)
    # CK's trial 10 s, its final run 20 s, RAF's trial still running at 140: 40 s.
    assert (usage.trials, usage.span_s, usage.busy_slot_s, usage.peak) == (3, 40.0, 70.0, 2)
