"""Planning: arithmetic and simulations for sizing a cluster (memory, catalog, capacity,
queueing, scheduling, the decision guide). Imports only :mod:`labkit.machine` and itself."""
