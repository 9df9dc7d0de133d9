# SPDX-License-Identifier: MIT OR Apache-2.0
"""Hostile input for the tc programs: generated and mutated frames through
BPF_PROG_TEST_RUN under a default-deny policy (issue 15, "Hostile input").

Properties, per generated sequence of frames (conntrack and fragment state
start empty for each):
- every pass is explained by the oracle in fuzz_frames (non-IP, dropped by the
  receiving stack anyway, ND/MLD, a forward/reply/related packet of a flow that
  passed earlier in the sequence, a later fragment of an admitted datagram, or
  the policy) — the oracle reads the bytes itself;
- the drop counters grow by exactly the number of SHOT verdicts, and one ring
  buffer event is written per drop;
- the loaded programs (id, tag, translated size) are the same after the run.

MESHCNI_FUZZ_FRAMES sets how many frames (default 3000, a few seconds);
scripts/fuzz.sh runs 100k and MESHCNI_FUZZ_REPORT=path writes the figures.
"""
import collections
import errno
import json
import os
import subprocess
import time

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from meshcni._libbpf import lib
from meshcni.errors import BpfError
from meshcni.datapath.policy import DENY, EGRESS, INGRESS, DropEvents, PolicyEntry, PolicyProgram

from fuzz_frames import (EGRESS_HOOK, INGRESS_HOOK, IPCACHE, OTHER, PEER, POD, POD4, TCP, UDP, Oracle,
                          fresh_spec, frame_bytes, icmp_error_about, later_fragment, mirror, mutate,
                          parse_frame)

pytestmark = pytest.mark.kernel

FRAMES = int(os.environ.get("MESHCNI_FUZZ_FRAMES", "3000"))
SEED = int(os.environ["MESHCNI_FUZZ_SEED"]) if os.environ.get("MESHCNI_FUZZ_SEED") else None
STEPS = (10, 60)                       # frames per generated sequence
EXAMPLES = max(1, FRAMES // sum(STEPS) * 2)
OK, SHOT = 0, 2
# debugging aids for a long run: collect violations instead of failing at the first, no shrinking
COLLECT = [] if os.environ.get("MESHCNI_FUZZ_COLLECT") else None
PHASES = [Phase.generate] if os.environ.get("MESHCNI_FUZZ_NOSHRINK") else list(Phase)


def prog_info(obj, prog):
    pid = lib.mc_prog_id(obj.prog_fd(prog))
    info = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(pid)], check=True,
                                     capture_output=True, text=True).stdout)
    return pid, info["tag"], info["bytes_xlated"], info.get("bytes_jited")


@pytest.fixture(scope="module")
def fuzz_dp(tmp_path_factory):
    from meshcni.sandbox import private_bpffs
    with private_bpffs() as root:
        prog = PolicyProgram(os.path.join(root, "meshcni"))
        d = prog.datapath()
        d.set_endpoint(1, POD, POD4)
        d.set_ipcache(IPCACHE)
        d.apply([PolicyEntry(POD, INGRESS, peer=PEER, proto=TCP, port=80),
                 PolicyEntry(POD, EGRESS, peer=PEER),
                 PolicyEntry(POD, EGRESS, peer=PEER, proto=TCP, port=22, action=DENY),
                 PolicyEntry(POD, EGRESS, proto=UDP, port=53),
                 PolicyEntry(POD, EGRESS, peer=OTHER, proto=TCP, port=443)],
                [(POD, INGRESS), (POD, EGRESS)])
        d.prog = prog
        d.frag = prog.obj.map("mc_frag")
        try:
            yield d
        finally:
            d.frag.close()
            d.close()
            prog.close()


@st.composite
def step(draw, history):
    hook = draw(st.sampled_from([EGRESS_HOOK, INGRESS_HOOK]))
    kind = draw(st.integers(0, 99)) if history else 99
    ethertype = None
    if kind < 25:
        spec = mirror(draw(st.sampled_from(history[-8:])), draw)
    elif kind < 35:
        spec = later_fragment(draw(st.sampled_from(history[-8:])), draw)
    elif kind < 45:
        spec = icmp_error_about(draw(st.sampled_from(history)), draw)
    else:
        spec = draw(fresh_spec(hook))
        if kind < 48:
            ethertype = draw(st.sampled_from([0x0806, 0x8100, 0x88CC, 0x0800, 0x86DD]))
    frame = frame_bytes(spec, ethertype)
    if draw(st.integers(0, 9)) < 3:
        frame = draw(mutate(frame))
    history.append(spec)
    return hook, frame


class Stats:
    def __init__(self):
        self.frames = 0
        self.verdicts = collections.Counter()
        self.why = collections.Counter()
        self.busy_s = 0.0
        self.run_s = 0.0     # inside BPF_PROG_TEST_RUN calls (syscall + program)
        self.prog_ns = 0     # the program itself, as the kernel times it
        self.refused = 0


def test_random_frames_never_pass_what_the_policy_does_not_admit(fuzz_dp):
    d = fuzz_dp
    before = {p: prog_info(d.prog.obj, p) for p in (EGRESS_HOOK, INGRESS_HOOK)}
    stats = Stats()
    events = DropEvents(d.obj.map("mc_events"))
    events.poll(0)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None,
              database=None, phases=PHASES, suppress_health_check=list(HealthCheck))
    @given(st.data())
    @seed(SEED)
    def run(data):
        d.ct.clear()
        d.frag.clear()
        events.poll(0)  # what an earlier (failed) sequence left behind
        oracle = Oracle()
        history, seq = [], []
        drops0 = sum(p for p, _ in d.drop_counts().values())
        shot = 0
        n = data.draw(st.integers(*STEPS), label="frames")
        t0 = time.perf_counter()
        for i in range(n):
            hook, frame = data.draw(step(history), label=f"frame {i}")
            stats.frames += 1
            t1 = time.perf_counter()
            try:
                verdict, _, ns = d.prog.obj.test_run(hook, frame)
            except BpfError as e:
                # the kernel's test_run wants at least the L3 header it expects
                assert e.errno == errno.EINVAL and len(frame) < 14 + 40, (hook, frame.hex(), e)
                stats.refused += 1
                continue
            stats.run_s += time.perf_counter() - t1
            stats.prog_ns += ns
            sem = parse_frame(frame)
            oracle.seen(hook, sem)
            seq.append((hook, frame.hex(), verdict))
            stats.verdicts[verdict] += 1
            if verdict == OK:
                why = oracle.explain(hook, frame, sem)
                if not why and COLLECT is not None:
                    COLLECT.append((hook, frame.hex(), repr(sem), list(seq)))
                    why = "VIOLATION"
                assert why, f"{hook} passed a frame the policy does not admit: {frame.hex()} ({sem})"
                stats.why[why] += 1
                oracle.passed(hook, frame, sem)
            else:
                assert verdict == SHOT, f"{hook}: verdict {verdict} for {frame.hex()}"
                shot += 1
        stats.busy_s += time.perf_counter() - t0
        drops = sum(p for p, _ in d.drop_counts().values()) - drops0
        assert drops == shot, f"drop counters grew by {drops}, {shot} frames were dropped"
        got = len(events.poll(0))
        assert got == shot, f"{got} drop events for {shot} drops"

    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    events.close()
    after = {p: prog_info(d.prog.obj, p) for p in (EGRESS_HOOK, INGRESS_HOOK)}
    assert after == before, "the verifier-approved programs changed during the run"
    assert stats.frames >= FRAMES * 0.5, stats.frames
    report = {"frames": stats.frames, "wall_s": round(wall, 2),
              "frames_per_s_wall": round(stats.frames / wall),
              "frames_per_s_test_run": round((stats.frames - stats.refused) / stats.run_s),
              "program_ns_per_frame": round(stats.prog_ns / max(1, stats.frames - stats.refused)),
              "refused_by_test_run": stats.refused, "pass": stats.verdicts[OK], "shot": stats.verdicts[SHOT],
              "pass_explained_by": dict(stats.why.most_common()),
              "drop_reasons": {k: v[0] for k, v in d.drop_counts().items()}}
    print("fuzz:", json.dumps(report))
    if COLLECT is not None:
        with open(os.environ["MESHCNI_FUZZ_COLLECT"], "w") as f:
            json.dump(COLLECT, f, indent=0)
        assert not COLLECT, f"{len(COLLECT)} violations"
    if os.environ.get("MESHCNI_FUZZ_REPORT"):
        with open(os.environ["MESHCNI_FUZZ_REPORT"], "w") as f:
            json.dump(report, f, indent=1)
