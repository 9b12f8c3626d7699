"""Dead letters kept per reason, and per path within it."""

from __future__ import annotations

from corral.actors.deadletter import DeadLetter, DeadLetterBox


def letter(path: str, reason: str, n: int) -> DeadLetter:
    return DeadLetter(path, n, reason, None, float(n))


def test_deliberate_drops_never_push_out_crashes() -> None:
    """1,000 drops after 3 crashes: the crashes are all still there."""
    box = DeadLetterBox(100)
    for n in range(3):
        box.add(letter("/db", "crashed", n))
    for n in range(3, 1003):
        box.add(letter("/cache", "dropped", n))
    kept = box.list()
    assert [d.message for d in kept if d.reason == "crashed"] == [0, 1, 2]
    assert [d.message for d in kept if d.reason == "dropped"] == list(range(998, 1003))
    assert box.total == 1003
    assert (box.by_path["/db"], box.by_path["/cache"]) == (3, 1000)


def test_one_path_flooding_a_reason_does_not_push_out_the_others() -> None:
    box = DeadLetterBox(100)  # 5 per path, 20 paths per reason
    box.add(letter("/quiet", "crashed", 0))
    for n in range(1, 500):
        box.add(letter("/loud", "crashed", n))
    assert [d.message for d in box.list("/quiet")] == [0]
    assert [d.message for d in box.list("/loud")] == [495, 496, 497, 498, 499]
    assert len(box) == 6


def test_past_twenty_paths_the_one_quiet_longest_goes() -> None:
    box = DeadLetterBox(100)
    for n in range(21):
        box.add(letter(f"/w{n}", "crashed", n))
    box.add(letter("/w1", "crashed", 21))  # /w1 had one lately: /w0 is the oldest
    box.add(letter("/w21", "crashed", 22))
    paths = {d.path for d in box.list()}
    assert "/w0" not in paths
    assert "/w1" in paths
    assert len(paths) == 20
    assert [d.message for d in box.list()][-2:] == [21, 22]  # listed in the order they came


def test_a_box_of_none_keeps_nothing_and_counts_all() -> None:
    box = DeadLetterBox(0)
    box.add(letter("/a", "crashed", 0))
    assert (box.list(), box.total) == ((), 1)
