# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni controller``: the cluster-wide process allocating Identities and CIDRIdentities.

    from meshcni.controller import Controller, ControllerConfig
    ctl = Controller(ControllerConfig(kubeconfig="/tmp/kubeconfig", gc_grace=1)).start()
    ...
    ctl.stop()

The decisions live in :mod:`meshcni.controllers.identity` (pure); this
package only wires informers, leader election, the API writes and metrics.
"""
from .controller import Controller, ControllerConfig

__all__ = ["Controller", "ControllerConfig"]
