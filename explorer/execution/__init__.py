"""Execution: the engine's machine pool, which runs jobs (bootable configs) and hands back outcomes.

`jobs` (what travels to a worker and back, and one job's run), `executor` (the interface the
search and the bench see), `local` (a pool of processes on this machine), and the Ray executor in
three parts: `ray_shipping` (what the master puts in Ray's object store), `ray_worker` (what a Ray
worker does with it) and `ray_executor` (the cluster executor the master drives).

Execution knows nothing of the search: it never chooses, reads, scores or stores a result.
Ray is optional (explorer[ray]): only explorer.execution.ray_worker and
explorer.execution.ray_executor import it, and nothing imports them until a Ray executor is asked for.
"""
