"""The wire protocol's helpers."""

from wire.protocol import coalesce_deltas, delta_event, done_event, start_event


def test_consecutive_deltas_become_one_and_other_events_keep_their_place() -> None:
    events = [
        start_event(1, 3),
        delta_event("he", 2),
        delta_event("llo", 3),
        done_event("length", {"output_tokens": 5}),
    ]

    assert coalesce_deltas(events) == [
        start_event(1, 3),
        delta_event("hello", 5),
        done_event("length", {"output_tokens": 5}),
    ]


def test_a_restart_between_deltas_keeps_them_apart() -> None:
    events = [delta_event("a", 1), start_event(2, 3), delta_event("b", 1)]

    assert coalesce_deltas(events) == events
