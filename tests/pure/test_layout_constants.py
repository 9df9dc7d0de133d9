# SPDX-License-Identifier: MIT OR Apache-2.0
"""meshcni/layout_constants.py, generated at build time, is layout.h's constants, no more, no less.

The kernel tier's twin (tests/kernel/test_layout_drift.py) compares it with the header compiled
into the extension; here it is compared with the header in the tree, without the extension.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from meshcni import _layoutgen, layout_constants
from meshcni.controllers import model

pytestmark = pytest.mark.pure

REPO = Path(__file__).resolve().parents[2]
HEADER = REPO / _layoutgen.HEADER


def test_generated_module_is_current():
    assert _layoutgen.check(str(REPO)) is None
    text = HEADER.read_text()
    assert layout_constants.HEADER_SHA256 == _layoutgen.sha256(text)
    assert Path(layout_constants.__file__).read_text() == _layoutgen.render(text)


def test_every_define_and_nothing_else():
    text = HEADER.read_text()
    defines = _layoutgen.defines(text)
    assert layout_constants.CONSTANTS == defines
    assert {"MC_ID_HOST", "MC_ID_REMOTE_NODE", "MC_DIR_INGRESS", "MC_MAGLEV_M", "MC_SVC_F_NODEPORT"} <= set(defines)
    for name, value in defines.items():
        assert getattr(layout_constants, name) == value, name
    public = {n for n in vars(layout_constants) if n.startswith("MC_")}
    assert public == set(defines)
    # a commented-out define is not one
    assert _layoutgen.defines("/* #define MC_A 1 */\n// #define MC_B 2\n#define MC_C 3\n") == {"MC_C": 3}


def test_model_takes_the_header_values():
    c = layout_constants
    assert (model.INGRESS, model.EGRESS, model.ALLOW, model.DENY) == \
        (c.MC_DIR_INGRESS, c.MC_DIR_EGRESS, c.MC_POLICY_ALLOW, c.MC_POLICY_DENY)
    from meshcni.controllers import ipcache
    assert (ipcache.ID_HOST, ipcache.ID_REMOTE_NODE) == (c.MC_ID_HOST, c.MC_ID_REMOTE_NODE)


def test_generator_writes_only_on_change_and_check_names_what_is_wrong(tmp_path):
    (tmp_path / "bpf" / "include" / "meshcni").mkdir(parents=True)
    h = tmp_path / _layoutgen.HEADER
    h.write_text("#define MC_X 7\n#define MC_Y 8 /* why */\n")
    assert "is missing" in _layoutgen.check(str(tmp_path))
    out = Path(_layoutgen.write(str(tmp_path)))
    mtime = out.stat().st_mtime_ns
    assert _layoutgen.check(str(tmp_path)) is None and _layoutgen.write(str(tmp_path)) == str(out)
    assert out.stat().st_mtime_ns == mtime
    spec = importlib.util.spec_from_file_location("gen", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (mod.MC_X, mod.MC_Y, mod.CONSTANTS) == (7, 8, {"MC_X": 7, "MC_Y": 8})
    h.write_text("#define MC_X 7\n")
    assert "generated from another" in _layoutgen.check(str(tmp_path))
    p = subprocess.run([sys.executable, str(REPO / "meshcni" / "_layoutgen.py"), "--check", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "rebuild" in p.stderr


@pytest.mark.extension
def test_a_stale_generated_module_stops_the_datapath(monkeypatch):
    from meshcni import layout
    layout.compiled.cache_clear()
    monkeypatch.setattr(layout_constants, "HEADER_SHA256", "0" * 64)
    try:
        with pytest.raises(layout.LayoutError, match="built from different layout.h: rebuild"):
            layout.compiled()
    finally:
        monkeypatch.undo()
        layout.compiled.cache_clear()
    assert layout.constants() == layout_constants.CONSTANTS
