# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni sim``: simulated clusters on one machine, in network namespaces.

- :mod:`meshcni.sim.topology`    underlay bridge, node namespaces, the ledger of what was made;
- :mod:`meshcni.sim.cluster`     one cluster: bring-up and teardown;
- :mod:`meshcni.sim.controllers` scheduler, ClusterIP allocator, EndpointSlice controller;
- :mod:`meshcni.sim.kubelet`     pods as namespaces + cgroups + the built-in server, via the real CNI plugin;
- :mod:`meshcni.sim.podserver`   the built-in workload;
- :mod:`meshcni.sim.cli`         the command line.
"""
