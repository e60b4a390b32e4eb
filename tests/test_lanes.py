"""The per-subscriber breaker of trackctl/lanes.py, driven with explicit clock values."""

from __future__ import annotations

from trackctl.lanes import BREAKER_AFTER, BREAKER_MAX_REST, BREAKER_REST, Breaker


def test_one_failure_without_an_answer_narrows_the_lane_to_one_request():
    b = Breaker()
    assert b.allowed(0) > 1000
    b.record(False, 0)
    assert b.allowed(0) == 1
    b.record(True, 1)  # any HTTP answer: back to full width
    assert b.allowed(1) > 1000 and b.opened == 0


def test_the_breaker_opens_rests_probes_and_doubles_its_rest_up_to_the_limit():
    b = Breaker()
    for _ in range(BREAKER_AFTER):
        b.record(False, 100)
    assert b.opened == 1 and b.allowed(100) == 0 and b.allowed(100 + BREAKER_REST - 0.1) == 0
    assert b.allowed(100 + BREAKER_REST) == 1  # one probe
    b.record(False, 100)  # a late failure of the batch that opened it changes nothing
    assert b.opened == 1 and b.open_until == 100 + BREAKER_REST
    now = 100 + BREAKER_REST
    rest = BREAKER_REST
    for _ in range(20):  # probes that keep failing
        b.record(False, now)
        rest = min(rest * 2, BREAKER_MAX_REST)
        assert b.open_until == now + rest and b.allowed(now) == 0
        now = b.open_until
    assert rest == BREAKER_MAX_REST
    b.record(True, now)  # the probe got an answer
    assert b.allowed(now) > 1000 and b.rest == BREAKER_REST
