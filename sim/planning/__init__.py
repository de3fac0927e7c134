"""The planning floor: many runs of the simulation to answer one question. `capacity` (the
capacity plan: the highest rate per replica within the SLOs, replicas verified by long cluster
runs, money and energy), `sweep` (latency and throughput against load), `executors` (where the
independent runs go: in-process, a local pool, Ray)."""
