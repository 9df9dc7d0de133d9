# SPDX-License-Identifier: MIT OR Apache-2.0
"""WorkQueue semantics: de-duplication, one worker per key, delays, backoff, shutdown."""
import threading
import time

import pytest

from meshcni.k8s import ShutDown, WorkQueue, run_workers

pytestmark = pytest.mark.pure


def test_dedupes_waiting_keys_in_fifo_order():
    q = WorkQueue()
    for k in ("a", "b", "a", "c", "b"):
        q.add(k)
    assert len(q) == 3
    assert [q.get(0), q.get(0), q.get(0)] == ["a", "b", "c"]
    assert q.get(timeout=0.01) is None


def test_key_added_while_processing_waits_for_done():
    q = WorkQueue()
    q.add("a")
    assert q.get(0) == "a"
    q.add("a")
    q.add("a")
    assert q.get(timeout=0.05) is None  # held by a worker: not handed out again
    q.done("a")
    assert q.get(0) == "a"  # queued once more, once
    q.done("a")
    assert q.get(timeout=0.01) is None


def test_no_two_workers_hold_the_same_key():
    q = WorkQueue()
    active, seen, lock = set(), [], threading.Lock()
    overlaps = []

    def work(key):
        with lock:
            if key in active:
                overlaps.append(key)
            active.add(key)
        time.sleep(0.001)
        with lock:
            active.discard(key)
            seen.append(key)

    threads = run_workers(q, work, n=8)
    keys = [f"k{i % 5}" for i in range(400)]
    for k in keys:
        q.add(k)
        if len(seen) % 7 == 0:
            time.sleep(0.0005)
    deadline = time.monotonic() + 5
    while (len(q) or q.in_flight()) and time.monotonic() < deadline:
        time.sleep(0.01)
    q.shutdown()
    for t in threads:
        t.join(2)
    assert not overlaps
    assert set(seen) == set(keys)
    assert len(seen) < len(keys)  # adds of a waiting key were merged


def test_add_after_delays():
    q = WorkQueue()
    t0 = time.monotonic()
    q.add_after("late", 0.2)
    q.add_after("early", 0.05)
    assert q.get(timeout=1) == "early"
    assert q.get(timeout=1) == "late"
    assert 0.18 <= time.monotonic() - t0 < 1.0


def test_add_after_wakes_a_blocked_get():
    q = WorkQueue()
    got = []
    t = threading.Thread(target=lambda: got.append((q.get(timeout=2), time.monotonic())))
    t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    q.add_after("x", 0.05)
    t.join(3)
    key, when = got[0]
    assert key == "x" and 0.04 <= when - t0 < 0.5


def test_rate_limited_backoff_doubles_and_forget_resets():
    q = WorkQueue(base_delay=0.02, max_delay=0.1)
    assert [q.when(n) for n in range(5)] == [0.02, 0.04, 0.08, 0.1, 0.1]
    delays = []
    for _ in range(3):
        t0 = time.monotonic()
        q.add_rate_limited("k")
        assert q.get(timeout=1) == "k"
        delays.append(time.monotonic() - t0)
        q.done("k")
    assert q.num_requeues("k") == 3
    assert delays[0] >= 0.019 and delays[1] >= 0.039 and delays[2] >= 0.079
    assert delays[2] < 0.5
    q.forget("k")
    assert q.num_requeues("k") == 0
    t0 = time.monotonic()
    q.add_rate_limited("k")
    assert q.get(timeout=1) == "k"
    assert time.monotonic() - t0 < 0.06


def test_run_workers_retries_failures_with_backoff():
    q = WorkQueue(base_delay=0.01, max_delay=0.05)
    calls = []
    ok = threading.Event()

    def work(key):
        calls.append((key, time.monotonic()))
        if len(calls) < 3:
            raise RuntimeError("transient")
        ok.set()

    threads = run_workers(q, work, n=2)
    q.add("obj")
    assert ok.wait(2)
    assert [k for k, _ in calls] == ["obj"] * 3
    assert calls[1][1] - calls[0][1] >= 0.009 and calls[2][1] - calls[1][1] >= 0.019
    time.sleep(0.01)
    assert q.num_requeues("obj") == 0  # success forgot the failures
    q.shutdown()
    for t in threads:
        t.join(2)
        assert not t.is_alive()


def test_shutdown_hands_out_ready_keys_then_raises():
    q = WorkQueue()
    q.add("a")
    q.add_after("never", 10)
    q.shutdown()
    q.add("ignored")
    assert q.get(0) == "a"  # ready work is still handed out
    q.done("a")
    with pytest.raises(ShutDown):
        q.get(timeout=1)
    assert q.shutting_down and q.delayed() == 0


def test_shutdown_wakes_blocked_getters():
    q = WorkQueue()
    ended = []

    def waiter():
        try:
            q.get(timeout=5)
        except ShutDown:
            ended.append(time.monotonic())

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    q.shutdown()
    for t in threads:
        t.join(2)
    assert len(ended) == 3 and max(ended) - t0 < 0.5


def test_discard_takes_a_waiting_key_out_but_not_a_held_one():
    q = WorkQueue()
    for k in ("a", "b", "c"):
        q.add(k)
    q.discard("b")
    q.discard("zzz")  # not there: nothing happens
    assert [q.get(0), q.get(0)] == ["a", "c"]
    q.add("a")  # while held: done() queues it again, discard must not lose that
    q.discard("a")
    q.done("a")
    assert q.get(0) == "a"
