"""The estimated wait a family shows: close to what a request joining now will actually wait."""

from __future__ import annotations

from queues.waiting import estimate_wait_sec

NOW = 1_000_000_000.0


def test_nobody_waiting_means_no_wait():
    assert estimate_wait_sec(0, [int(NOW - 1000)], [], NOW) == 0.0


def test_steady_service_follows_littles_law():
    served = [int(NOW - i * 1000) for i in range(60)]  # one a second for the last minute
    assert abs(estimate_wait_sec(30, served, [], NOW) - 30.0) < 1.0


def test_a_burst_is_not_mistaken_for_a_sustained_rate():
    # 80 dispatched within one second, 40 s ago (paced keys spend their budget at once)
    served = [int(NOW - 40_000 - i) for i in range(80)]
    estimate = estimate_wait_sec(40, served, [], NOW)
    assert estimate >= 20, "80 a minute, not 80 a second"


def test_when_every_key_is_held_back_the_line_moves_when_the_first_comes_back():
    served = [int(NOW - 50_000 - i) for i in range(80)]  # a full minute's budget went 50 s ago
    back_in_10s = NOW + 10_000
    assert estimate_wait_sec(1, served, [], NOW, back_in_10s) == 10.0
    assert estimate_wait_sec(80, served, [], NOW, back_in_10s) == 10.0, "the whole next burst"
    assert estimate_wait_sec(81, served, [], NOW, back_in_10s) == 70.0, "one burst later"


def test_before_any_dispatch_recent_waits_stand_in():
    waits = [(int(NOW - 5_000), 12_000), (int(NOW - 4_000), 8_000), (int(NOW - 3_000), 10_000)]
    assert estimate_wait_sec(3, [], waits, NOW) == 10.0
