# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent's local API serves root only: mode 0600 and SO_PEERCRED on every connection.

Needs root (to start an unprivileged process); no BPF, no namespaces.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from meshcni.agent.localapi import LocalAPI

pytestmark = pytest.mark.kernel

NOBODY = 65534
# GET /v1/status over the socket; prints the status line, or the errno name on connect failure
CLIENT = r"""
import errno, os, socket, sys
if len(sys.argv) > 2:
    os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[2]))
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(errno.errorcode[e.errno]); sys.exit(0)
s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
print(out.split(b"\r\n", 1)[0].decode())
print(out.split(b"\r\n\r\n", 1)[-1].decode())
"""


def call(path, uid=None):
    args = [sys.executable, "-c", CLIENT, path] + ([str(uid)] if uid is not None else [])
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=20).stdout.splitlines()


@pytest.fixture
def api():
    # a directory every user may traverse (pytest's tmp_path is 0700): only the socket's
    # own mode and SO_PEERCRED stand between an unprivileged user and the API
    d = tempfile.mkdtemp(prefix="meshcni-localapi-", dir="/tmp")
    os.chmod(d, 0o755)
    a = LocalAPI(os.path.join(d, "agent.sock"), status=lambda: {"node": "n1"}).start()
    try:
        yield a
    finally:
        a.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start an unprivileged client")
def test_root_is_served_and_the_socket_is_0600(api):
    assert os.stat(api.path).st_mode & 0o777 == 0o600
    out = call(api.path)
    assert out[0] == "HTTP/1.1 200 OK"
    assert json.loads(out[-1]) == {"node": "n1"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start an unprivileged client")
def test_unprivileged_process_is_refused(api):
    # the file mode stops it at connect()
    assert call(api.path, NOBODY) == ["EACCES"]
    # and with the mode opened up (a mistake, a bind mount), the peer credentials still do
    os.chmod(api.path, 0o666)
    out = call(api.path, NOBODY)
    assert out[0] == "HTTP/1.1 403 Forbidden"
    assert "uid 65534" in json.loads(out[-1])["error"]
    assert call(api.path)[0] == "HTTP/1.1 200 OK"  # root still is
