"""The comparison harness: how each differentiator's cost and accuracy scale with n and m.

* problems: ``problems()``, ``get_problem(name, **options)``, ``user_problem(target, inputs)``
* one case: ``run_case(problem, size, method, dtype)`` -> a :class:`Record` (a typed dict;
  ``record.py`` names its fields, the outcomes and the case key)
* many cases, isolated: ``sweep(problems, sizes, methods, dtypes, out=..., budget=...,
  resume=..., progress=...)`` -> :class:`Results`, each case in a worker process
  (``worker.py``: both sides of it, JAX-free at import)
* a user's own function, in this process: ``compare(f, *args, methods=...)``
* results: ``load(path)`` -> :class:`Results` with ``.table()``, ``.to_csv()``,
  ``.fit_exponents()``, ``.crossover()``, ``.plot(folder)``; ``report(results)`` -> the page
* stochastic estimators: ``quality(d, fun, args, exact)`` (cosine, bias, second moment);
  ``train(task, methods, budget=...)`` (loss vs forward-pass equivalents and seconds)
* GradBench's evals as problems (``gradbench``, with its nested-gradient solver in
  ``gradbench.nested``); the memory study (``memory_sweep``)
* sparse derivatives: a method named ``name+sparse`` measures its compressed Jacobian
  (``run_case``, ``sweep``; ``sparse_suite``, ``with_sparse``, ``Results.sparse_view``), on
  the sparse families of ``sparse_families.py`` among others (docs/sparse.md)

The names load on first use: ``import diffkit.harness`` alone imports no JAX, so the sweep's
worker process (``python -m diffkit.harness.worker``) can set its limits first.

Example:
    >>> import diffkit as dk, jax.numpy as jnp
    >>> res = dk.harness.compare(lambda x: jnp.sum(x**2), jnp.ones(3), methods=["jax-rev"],
    ...                          min_time=0.01)
    >>> res[0]["outcome"], res[0]["rho_max"]
    ('ok', 0.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffkit._core.lazy import exports

_EXPORTS = {
    "quality": "diffkit.harness.estimators",
    "train": "diffkit.harness.estimators",
    "TOLERANCE": "diffkit.harness.measure",
    "run_case": "diffkit.harness.measure",
    "MemoryFront": "diffkit.harness.memory",
    "memory_sweep": "diffkit.harness.memory",
    "Instance": "diffkit.harness.families",
    "Problem": "diffkit.harness.families",
    "get_problem": "diffkit.harness.families",
    "problems": "diffkit.harness.families",
    "register_problem": "diffkit.harness.families",
    "user_problem": "diffkit.harness.families",
    "OUTCOMES": "diffkit.harness.record",
    "Record": "diffkit.harness.record",
    "Results": "diffkit.harness.results",
    "load": "diffkit.harness.results",
    "report": "diffkit.harness.results",
    "compare": "diffkit.harness.sweeps",
    "gradbench_suite": "diffkit.harness.sweeps",
    "quick_suite": "diffkit.harness.sweeps",
    "sparse_suite": "diffkit.harness.sweeps",
    "with_sparse": "diffkit.harness.sweeps",
    "sweep": "diffkit.harness.sweeps",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from diffkit.harness.estimators import quality as quality
    from diffkit.harness.estimators import train as train
    from diffkit.harness.families import Instance as Instance
    from diffkit.harness.families import Problem as Problem
    from diffkit.harness.families import get_problem as get_problem
    from diffkit.harness.families import problems as problems
    from diffkit.harness.families import register_problem as register_problem
    from diffkit.harness.families import user_problem as user_problem
    from diffkit.harness.measure import TOLERANCE as TOLERANCE
    from diffkit.harness.measure import run_case as run_case
    from diffkit.harness.memory import MemoryFront as MemoryFront
    from diffkit.harness.memory import memory_sweep as memory_sweep
    from diffkit.harness.record import OUTCOMES as OUTCOMES
    from diffkit.harness.record import Record as Record
    from diffkit.harness.results import Results as Results
    from diffkit.harness.results import load as load
    from diffkit.harness.results import report as report
    from diffkit.harness.sweeps import compare as compare
    from diffkit.harness.sweeps import gradbench_suite as gradbench_suite
    from diffkit.harness.sweeps import quick_suite as quick_suite
    from diffkit.harness.sweeps import sparse_suite as sparse_suite
    from diffkit.harness.sweeps import sweep as sweep
    from diffkit.harness.sweeps import with_sparse as with_sparse
