"""kopf wiring: watch events become keys in a work queue; workers reconcile them.

Handlers never plan or write: they only say which object may need a look.
Workers read, plan (edgewise.core), apply (edgewise.kube) and write status.
Level-based: a key means "compare desired and actual now", so a duplicate,
late or lost event costs nothing (a periodic resync catches anything missed).
"""
