# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni agent``: the per-node process (DaemonSet). See :mod:`meshcni.agent.agent`."""
