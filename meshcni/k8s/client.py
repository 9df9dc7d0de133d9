# SPDX-License-Identifier: MIT OR Apache-2.0
"""Building a ``kubernetes.client.ApiClient``: from a kubeconfig file, or in-cluster."""
from __future__ import annotations

import logging
import os

from kubernetes import client, config

log = logging.getLogger("meshcni.k8s.client")

# informers, the leader elector and controllers share one client; urllib3's default pool of 4
# connections would make a fifth concurrent watch wait for a free one
DEFAULT_POOL = 32


def in_cluster() -> bool:
    """True when running in a pod with a service account token mounted."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        "/var/run/secrets/kubernetes.io/serviceaccount/token")


def api_client(kubeconfig: str | None = None, context: str | None = None,
               pool_maxsize: int = DEFAULT_POOL) -> client.ApiClient:
    """An ApiClient for ``kubeconfig`` (a path), else $KUBECONFIG / ~/.kube/config, else in-cluster.

    An explicit ``kubeconfig`` that does not exist is an error rather than a
    silent fallback, so a typo never points a process at another cluster.
    """
    cfg = client.Configuration()
    if kubeconfig:
        if not os.path.exists(kubeconfig):
            raise FileNotFoundError(f"kubeconfig {kubeconfig}: no such file")
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        source = kubeconfig
    else:
        env = os.environ.get("KUBECONFIG", "")
        paths = [p for p in env.split(os.pathsep) if p] or [os.path.expanduser("~/.kube/config")]
        found = next((p for p in paths if os.path.exists(p)), None)
        if found is not None:
            config.load_kube_config(config_file=found, context=context, client_configuration=cfg)
            source = found
        elif in_cluster():
            config.load_incluster_config(client_configuration=cfg)
            source = "in-cluster service account"
        else:
            raise RuntimeError("no Kubernetes configuration: pass a kubeconfig, set $KUBECONFIG, "
                               "or run in a pod with a service account")
    cfg.connection_pool_maxsize = pool_maxsize
    log.debug("API server %s (from %s)", cfg.host, source)
    return client.ApiClient(configuration=cfg)
