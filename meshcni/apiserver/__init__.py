# SPDX-License-Identifier: MIT OR Apache-2.0
"""A Kubernetes-compatible API server (REST + watch over plain HTTP) for the simulator and tests.

    from meshcni.apiserver import APIServer
    with APIServer(crd_dir="deploy/crds") as srv:
        srv.write_kubeconfig("/tmp/kubeconfig")
        ...  # kubernetes.config.load_kube_config("/tmp/kubeconfig"); kubectl --kubeconfig ...
"""
from .server import APIServer, serve, write_kubeconfig

__all__ = ["APIServer", "serve", "write_kubeconfig"]
