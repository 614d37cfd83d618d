"""Pure planning logic: classification, desired objects, status.

Nothing here talks to Kubernetes or reads the clock: callers pass nodes,
existing objects and the time in, and get plain data back. That is what makes
the planner exhaustively unit-testable and the handlers thin.
"""
