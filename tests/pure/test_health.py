# SPDX-License-Identifier: MIT OR Apache-2.0
"""/healthz catches a stuck process, /readyz keeps its meaning.

A real HealthServer on loopback, a real WorkQueue with a real worker thread:
a reconcile that blocks past the bound turns /healthz into 503 naming the
work queue, and back to 200 once it returns; an idle queue and keys waiting
in backoff are healthy; a dead informer thread and a vanished pin fail it.
"""
from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from meshcni.health import HealthServer, Liveness, queue_progress, threads_alive, watch
from meshcni.k8s.workqueue import WorkQueue, run_workers

pytestmark = pytest.mark.pure


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def server():
    from prometheus_client import CollectorRegistry
    ready = threading.Event()
    srv = HealthServer("127.0.0.1:0", ready, CollectorRegistry(), name="test")
    yield srv, ready
    srv.stop()


def _until(fn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()


def test_without_checks_healthz_is_serving_and_readyz_follows_the_event(server):
    srv, ready = server
    assert _get(srv.port, "/healthz") == (200, "ok")
    assert _get(srv.port, "/readyz") == (503, "not ready")
    ready.set()
    assert _get(srv.port, "/readyz") == (200, "ok")


def test_a_stuck_reconcile_fails_liveness_until_it_returns(server):
    srv, _ = server
    q = WorkQueue(name="t")
    release, entered, done = threading.Event(), threading.Event(), []

    def work(key):
        if key == "stuck":
            entered.set()
            release.wait(10)
        done.append(key)

    run_workers(q, work, 1, name="t")
    watch(srv.liveness, queue=q, stuck_after=0.3)
    q.add("fine")
    assert _until(lambda: "fine" in done)
    time.sleep(0.4)  # idle for longer than the bound: nothing waits, healthy
    assert _get(srv.port, "/healthz") == (200, "ok")

    q.add("stuck")
    assert entered.wait(5)
    q.add("behind")  # waits for the one worker, too
    code, body = _until(lambda: (lambda r: r if r[0] == 503 else None)(_get(srv.port, "/healthz")))
    assert code == 503 and body.startswith("workqueue: a reconcile has run for"), body
    release.set()
    assert _until(lambda: "behind" in done)
    assert _get(srv.port, "/healthz") == (200, "ok")
    q.shutdown()


def test_keys_in_backoff_are_not_stuck():
    q = WorkQueue(name="t")
    check = queue_progress(q, 0.2)
    q.add_after("retry", 5.0)  # a failed key waiting for its backoff
    time.sleep(0.3)
    assert check() is None
    q.add("ready")             # a ready key nobody takes: the worker is gone
    time.sleep(0.3)
    assert "waited" in check()
    assert q.get(timeout=1) == "ready"
    q.done("ready")
    assert check() is None


def test_a_dead_informer_thread_and_a_gone_pin_fail_liveness(tmp_path, server):
    srv, _ = server

    class Inf:  # what threads_alive reads of an Informer: its name and its thread
        def __init__(self, name, thread):
            self.name, self._thread = name, thread

    alive_stop = threading.Event()
    alive = threading.Thread(target=alive_stop.wait, daemon=True)
    dead = threading.Thread(target=lambda: None)
    alive.start(), dead.start(), dead.join()
    pin = tmp_path / "progs"
    pin.mkdir()
    watch(srv.liveness, informers=[Inf("pods", alive), Inf("services", dead)], pins=[str(pin)])
    code, body = _get(srv.port, "/healthz")
    assert code == 503 and "informers: informer threads ended: services" in body and "datapath" not in body
    srv.liveness.add("informers", threads_alive([Inf("pods", alive)]))
    assert _get(srv.port, "/healthz") == (200, "ok")
    os.rmdir(pin)
    code, body = _get(srv.port, "/healthz")
    assert code == 503 and body == f"datapath: pins gone: {pin}\n"
    alive_stop.set()


def test_a_check_that_raises_is_a_failure():
    lv = Liveness()
    lv.add("boom", lambda: 1 / 0)
    lv.add("ok", lambda: None)
    assert lv.failures() == [("boom", "check raised ZeroDivisionError: division by zero")]
