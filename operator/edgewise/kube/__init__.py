"""Kubernetes I/O: read what exists, apply what the planner wants, write status and Events.

Every write goes through `Writes`, which counts them: the operator must not
write when nothing changed (a restart, a resync, a duplicate event), and the
tests check that it does not.
"""
