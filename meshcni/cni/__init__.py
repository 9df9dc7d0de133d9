# SPDX-License-Identifier: MIT OR Apache-2.0
"""The CNI plugin (``meshcni-cni``) and its installer.

- :mod:`meshcni.cni.spec`      the protocol: versions, errors, env, results (pure);
- :mod:`meshcni.cni.ipam`      host-local style IPAM on disk (pure + files);
- :mod:`meshcni.cni.link`      netlink work (pyroute2);
- :mod:`meshcni.cni.endpoints` endpoint records and the agent's local API client;
- :mod:`meshcni.cni.plugin`    the executable;
- :mod:`meshcni.cni.install`   copy the plugin, write the network config.

Nothing is imported here: the plugin runs once per pod and starts lean.
"""
