# SPDX-License-Identifier: MIT OR Apache-2.0
"""Kubernetes machinery of the control plane, on the official ``kubernetes`` client.

    from meshcni.k8s import api_client, Informer, WorkQueue, run_workers, LeaderElector
    api = api_client("/tmp/kubeconfig")
    pods = Informer(kubernetes.client.CoreV1Api(api).list_pod_for_all_namespaces,
                    indexers={"app": label_index("app")}).start()
    pods.wait_for_sync(30)

Informers cache plain dicts keyed ``namespace/name``. Controllers are
:class:`Reconciler` s (what they watch, a pure desired state, an applier)
driven by one :class:`Runner` per process (queue, retries, metrics, Events).
"""
from .client import api_client, in_cluster
from .events import EventRecorder
from .informer import Informer, label_index, namespace_index, node_index, object_key
from .leader import LeaderElector
from .reconciler import Desired, ReconcileMetrics, Reconciler, Runner, SyncTimeout
from .workqueue import ShutDown, WorkQueue, run_workers

__all__ = ["api_client", "in_cluster", "Desired", "EventRecorder", "Informer", "ReconcileMetrics", "Reconciler",
           "Runner", "SyncTimeout", "label_index", "namespace_index", "node_index",
           "object_key", "LeaderElector", "ShutDown", "WorkQueue", "run_workers"]
