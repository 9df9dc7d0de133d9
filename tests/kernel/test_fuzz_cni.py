# SPDX-License-Identifier: MIT OR Apache-2.0
"""Hostile input for the CNI plugin and the compiled shim (issue 15).

Generated stdin configs and environments, each with one fault (bad JSON, wrong types, huge
values, unknown cniVersion, missing/garbage CNI_NETNS, missing CNI_COMMAND, odd CNI_ARGS,
unknown IPAM types, ...): the answer is CNI error JSON with the spec code of that fault, the
exit status is non-zero, and nothing is made on the node (no link, no IPAM allocation, no
endpoint record, no file outside the test's directories).

The in-process plugin (`meshcni.cni.plugin.run`) takes most cases; a smaller number go through
the installed executables: the Python launcher and the compiled shim. Everything runs inside a
namespace the test made (the plugin never gets a real pod netns, but a bug must not be able to
touch the machine's). MESHCNI_FUZZ_CNI raises the count (default 1000 in-process, 1/10 exec'd).
"""
import json
import os
import subprocess
import threading

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshcni.cni import spec
from meshcni.cni.install import install, shim_binary
from meshcni.cni.plugin import run
from meshcni.datapath.policy import in_netns

pytestmark = pytest.mark.kernel

N = int(os.environ.get("MESHCNI_FUZZ_CNI", "1000"))
SEED = int(os.environ["MESHCNI_FUZZ_SEED"]) if os.environ.get("MESHCNI_FUZZ_SEED") else None
STATS = {}

INVALID_ENV, DECODE, VERSION, UNSUPPORTED, CONFIG, UNKNOWN_CONTAINER, TRY_AGAIN = 4, 6, 1, 2, 7, 3, 11
text = st.text(max_size=12)
junk = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), text,
                 st.lists(st.integers(), max_size=2), st.dictionaries(text, st.integers(), max_size=2))


def not_(kind):
    """A JSON value that is not of the given kind(s)."""
    return junk.filter(lambda v: not isinstance(v, kind) or (kind is int and isinstance(v, bool)))


@st.composite
def case(draw, tmp):
    """(fault, environ, stdin bytes, expected code)."""
    cmd = draw(st.sampled_from(["ADD", "DEL", "CHECK"]))
    conf = {"cniVersion": draw(st.sampled_from(spec.SUPPORTED_VERSIONS[1:])), "name": "fuzznet",
            "type": "meshcni-cni", "datapath": "off", "stateDir": f"{tmp}/state",
            "ipam": {"type": "meshcni", "subnet": "10.20.0.0/24", "dataDir": f"{tmp}/ipam"}}
    env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c" + draw(st.sampled_from(["1", "abc", "0" * 64])),
           "CNI_IFNAME": "eth0", "CNI_NETNS": f"{tmp}/no-such-netns", "CNI_PATH": f"{tmp}/bin",
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"}
    faults = ["no_command", "bad_command", "no_containerid", "no_ifname", "bad_args", "bad_containerid",
              "bad_ifname", "bad_json", "not_object", "unknown_version", "malformed_version", "no_version",
              "bad_name", "bad_mtu", "bad_datapath", "bad_path", "ipam_not_object", "ipam_type",
              "bad_attachments", "ipmasq", "bad_prev_result", "bad_ipam"]
    if cmd == "ADD":
        faults += ["no_netns", "netns_absent", "netns_not_a_netns", "unknown_ipam", "no_ipam", "agent_down"]
    if cmd == "CHECK":
        faults += ["no_netns", "old_version_for_check"]
    fault = draw(st.sampled_from(faults))
    code = CONFIG
    stdin = None
    if fault == "no_command":
        del env["CNI_COMMAND"]
        code = INVALID_ENV
    elif fault == "bad_command":
        env["CNI_COMMAND"] = draw(st.sampled_from(["add", "", "ADD ", "DELETE", "\x00", "X" * 5000]))
        code = INVALID_ENV
    elif fault == "no_containerid":
        env[draw(st.sampled_from(["CNI_CONTAINERID"]))] = draw(st.sampled_from(["", None]))
        code = INVALID_ENV
    elif fault == "no_ifname":
        env["CNI_IFNAME"] = draw(st.sampled_from(["", None]))
        code = INVALID_ENV
    elif fault == "no_netns":
        env["CNI_NETNS"] = draw(st.sampled_from(["", None]))
        code = INVALID_ENV
    elif fault == "bad_args":
        env["CNI_ARGS"] = draw(st.sampled_from(["novalue", "=v", "a=b;;c", "K8S_POD_NAME", ";=;", "a=b;c"]))
        code = INVALID_ENV
    elif fault == "bad_containerid":
        env["CNI_CONTAINERID"] = draw(st.sampled_from(["../x", "a b", "/abs", "-x", ".hidden", "a\nb", "ä"]))
        code = INVALID_ENV
    elif fault == "bad_ifname":
        env["CNI_IFNAME"] = draw(st.sampled_from(["a" * 16, "a/b", "..", ".", "a b", "a:b"]))
        code = INVALID_ENV
    elif fault == "bad_json":
        good = json.dumps(conf).encode()
        stdin = draw(st.one_of(st.just(good[:draw(st.integers(0, len(good) - 1))]),
                               st.binary(min_size=1, max_size=64).filter(lambda b: _not_json(b)),
                               st.just(b"\xff\xfe" + good), st.just(b"[" * 100_000)))
        code = DECODE
    elif fault == "not_object":
        stdin = json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), text,
                                          st.none()))).encode()
        code = DECODE
    elif fault == "unknown_version":
        conf["cniVersion"] = draw(st.sampled_from(["9.9.9", "0.1.0", "0.3.1", "1.2.0", "1.1.1"]))
        code = VERSION
    elif fault == "malformed_version":
        conf["cniVersion"] = draw(st.sampled_from(["abc", "1.1", "1..1", "1.1.0.0", "v1.1.0", "1." * 10000]))
        code = VERSION
    elif fault == "no_version":
        conf["cniVersion"] = draw(st.one_of(st.just(""), not_(str)))
        if conf["cniVersion"] is None and draw(st.booleans()):
            del conf["cniVersion"]
        code = CONFIG
    elif fault == "bad_name":
        conf["name"] = draw(st.one_of(st.sampled_from(["", "../../escaped", "/tmp/escaped-abs", "a/b", ".",
                                                       "..", "a b"]), not_(str)))
        code = CONFIG
    elif fault == "bad_mtu":
        conf["mtu"] = draw(st.one_of(st.sampled_from([0, 67, 65536, 10**30, -1, True, "1500", 1500.0]),
                                     not_(int)))
        if isinstance(conf["mtu"], int) and not isinstance(conf["mtu"], bool) and 68 <= conf["mtu"] <= 65535:
            conf["mtu"] = 0
    elif fault == "bad_datapath":
        conf["datapath"] = draw(st.one_of(st.sampled_from(["", "on", "OFF", "auto "]),
                                          not_(str).filter(lambda v: v is not None)))
    elif fault == "bad_path":
        key = draw(st.sampled_from(["bpfRoot", "stateDir", "agentSocket", "logFile"]))
        conf[key] = draw(st.one_of(st.sampled_from(["relative/path", "", "x"]),
                                   not_(str).filter(lambda v: v is not None)))
    elif fault == "ipam_not_object":
        conf["ipam"] = draw(not_(dict).filter(lambda v: v is not None))
    elif fault == "ipam_type":
        conf["ipam"]["type"] = draw(not_(str).filter(lambda v: v is not None))
    elif fault == "bad_attachments":
        conf["cni.dev/valid-attachments"] = draw(st.one_of(
            not_(list).filter(lambda v: v is not None), st.lists(not_(dict), min_size=1, max_size=2),
            st.just([{"containerID": 1, "ifname": "eth0"}])))
    elif fault == "ipmasq":
        conf["ipMasq"] = True
        code = UNSUPPORTED
    elif fault == "bad_prev_result":
        conf["prevResult"], code = draw(st.sampled_from([
            (5, DECODE), ([], DECODE), ({"interfaces": [5]}, DECODE), ({"ips": [{"address": "x"}]}, DECODE),
            ({"ips": [{"address": "10.0.0.1/24", "interface": 9}]}, DECODE), ({"routes": [{}]}, DECODE),
            ({"cniVersion": "9.9.9"}, VERSION)]))
    elif fault == "bad_ipam":
        conf["ipam"].update(draw(st.sampled_from([
            {"subnet": "10.20.0.0/33"}, {"subnet": "banana"}, {"subnet": 5}, {"subnet": "1" * 100_000},
            {"ranges": 5}, {"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.1.0.1"}]]},
            {"dataDir": "relative"}, {"dataDir": 5}, {"subnet": "10.20.0.0/24", "gateway": "x"}])))
        if cmd != "ADD":  # DEL/CHECK of an IPAM config that cannot be read: still an error, never a crash
            code = None
        env["CNI_NETNS"] = f"{tmp}/a-file"  # exists: the IPAM step is reached
    elif fault == "old_version_for_check":
        conf["cniVersion"] = "0.4.0"
        env["CNI_COMMAND"] = draw(st.sampled_from(["STATUS", "GC"]))
        code = VERSION
    elif fault == "netns_absent":
        env["CNI_NETNS"] = draw(st.sampled_from([f"{tmp}/gone", "/nonexistent/ns", "relative-ns"]))
        code = UNKNOWN_CONTAINER
    elif fault == "netns_not_a_netns":
        env["CNI_NETNS"] = draw(st.sampled_from([f"{tmp}/a-file", tmp, "/dev/null"]))
        code = UNKNOWN_CONTAINER
    elif fault == "unknown_ipam":
        conf["ipam"] = {"type": draw(st.sampled_from(["nosuch", "../" * 30 + "bin/true", "/bin/true", "host-local",
                                                      "", ".", ".."]))}
        if conf["ipam"]["type"] == "":
            conf["ipam"]["type"] = "nosuch"
        env["CNI_NETNS"] = f"{tmp}/a-file"  # exists: the IPAM step is reached
    elif fault == "no_ipam":
        del conf["ipam"]
        env["CNI_NETNS"] = f"{tmp}/a-file"
    elif fault == "agent_down":
        conf["agentSocket"] = f"{tmp}/no-agent.sock"
        code = TRY_AGAIN
    env = {k: v for k, v in env.items() if v is not None}
    if stdin is None:
        stdin = json.dumps(conf).encode()
    return fault, env, stdin, code


def _not_json(b):
    try:
        json.loads(b)
        return False
    except (ValueError, UnicodeDecodeError):
        return True


def check_answer(fault, env, stdin, code, rc, out):
    where = f"{fault}: env={ {k: v[:80] for k, v in env.items()} } stdin={stdin[:200]!r}"
    if code is None and rc == 0 and env.get("CNI_COMMAND") == "DEL":
        # DEL is best effort (spec): one whose IPAM config cannot be read has nothing to release
        STATS.setdefault(fault, {}).setdefault("ok", 0)
        STATS[fault]["ok"] += 1
        return
    assert rc != 0, f"{where}: exit 0"
    assert isinstance(out, dict), f"{where}: {out!r}"
    assert out.get("cniVersion") in spec.SUPPORTED_VERSIONS, (where, out)
    assert isinstance(out.get("code"), int) and isinstance(out.get("msg"), str) and out["msg"], (where, out)
    if code is not None:
        assert out["code"] == code, f"{where}: code {out['code']} ({out['msg']}), expected {code}"
    else:
        assert out["code"] in (CONFIG, DECODE), (where, out)
    STATS.setdefault(fault, {}).setdefault(out["code"], 0)
    STATS[fault][out["code"]] += 1


def nothing_made(tmp, ns, links_before):
    """No IPAM allocation, no endpoint record, no new link, nothing outside tmp."""
    ipam = os.path.join(tmp, "ipam")
    for root, _, files in os.walk(ipam):
        for f in files:
            if f == "allocations.json":
                with open(os.path.join(root, f)) as fh:
                    assert not json.load(fh).get("allocations"), os.path.join(root, f)
    rec = os.path.join(tmp, "state", "endpoints")
    assert not (os.path.isdir(rec) and os.listdir(rec)), os.listdir(rec)
    assert _links(ns) == links_before[0] and _links(None) == links_before[1]
    for p in ("/tmp/escaped", "/tmp/escaped-abs", os.path.join(os.path.dirname(tmp), "escaped")):
        assert not os.path.exists(p), p


def _links(ns):
    cmd = ["ip", "-j", "link", "show"] if ns is None else ["ip", "-n", ns, "-j", "link", "show"]
    return sorted(x["ifname"] for x in json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                                 text=True).stdout))


@pytest.fixture
def sandbox(netns, tmp_path):
    ns = netns("mcfuzz")
    tmp = str(tmp_path)
    open(os.path.join(tmp, "a-file"), "w").close()
    os.makedirs(os.path.join(tmp, "bin"))
    return ns, tmp


def _settings(n):
    return settings(max_examples=n, deadline=None, database=None, derandomize=SEED is None,
                    suppress_health_check=list(HealthCheck))


def test_plugin_in_process(sandbox):
    ns, tmp = sandbox
    before = (_links(ns), _links(None))
    count = [0]

    @_settings(N)
    @given(case(tmp))
    def go(c):
        fault, env, stdin, code = c
        rc, out = run(env, stdin)
        check_answer(fault, env, stdin, code, rc, out)
        json.dumps(out)  # printable as the runtime reads it
        count[0] += 1

    # the plugin runs in this thread, inside the test's namespace
    err = []

    def body():
        try:
            with in_netns(ns):
                go()
        except BaseException as e:  # re-raised in the test's thread
            err.append(e)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if err:
        raise err[0]
    nothing_made(tmp, ns, before)
    assert count[0] >= N * 0.9
    _report("cni_in_process")


@pytest.mark.parametrize("which", ["launcher", "shim"])
def test_installed_executables(sandbox, which):
    ns, tmp = sandbox
    if which == "shim" and shim_binary() is None:
        pytest.skip("shim not built (run scripts/setup-machine.sh)")
    bindir = os.path.join(tmp, "bin")
    install(bindir, os.path.join(tmp, "net.d"), subnets=["10.20.0.0/24"], shim=which == "shim")
    exe = os.path.join(bindir, "meshcni-cni")
    before = (_links(ns), _links(None))

    @_settings(max(10, N // 20))
    @given(case(tmp))
    def go(c):
        fault, env, stdin, code = c
        assume(not any("\x00" in v for v in env.values()))  # an environment cannot carry NUL
        p = subprocess.run(["ip", "netns", "exec", ns, exe], input=stdin, capture_output=True,
                           env=dict(env, PATH=os.environ.get("PATH", "")), timeout=60)
        lines = p.stdout.decode(errors="replace").strip().splitlines()
        assert len(lines) == 1, f"{fault}: stdout {p.stdout[:300]!r} stderr {p.stderr[-300:]!r}"
        check_answer(fault, env, stdin, code, p.returncode, json.loads(lines[0]))

    go()
    nothing_made(tmp, ns, before)
    _report(f"cni_{which}")


def _report(name):
    d = os.environ.get("MESHCNI_FUZZ_REPORT_DIR")
    if d:
        with open(os.path.join(d, name + ".json"), "w") as f:
            json.dump({"cases_by_fault_and_code": STATS}, f, indent=1, default=str)
    STATS.clear()
