"""The comparison harness: how each differentiator's cost and accuracy scale with n and m.

* problems: ``problems()``, ``get_problem(name, **options)``, ``user_problem(target, inputs)``
* one case: ``run_case(problem, size, method, dtype)`` -> a :class:`Record` (a typed dict;
  ``record.py`` names its fields, the outcomes and the case key)
* many cases, isolated: ``sweep(problems, sizes, methods, dtypes, out=..., budget=...,
  resume=..., progress=...)`` -> :class:`Results`
* a user's own function, in this process: ``compare(f, *args, methods=...)``
* results: ``load(path)`` -> :class:`Results` with ``.table()``, ``.to_csv()``,
  ``.fit_exponents()``, ``.crossover()``, ``.plot(folder)``
* stochastic estimators: ``quality(d, fun, args, exact)`` (cosine, bias, second moment);
  ``train(task, methods, budget=...)`` (loss vs forward-pass equivalents and seconds)

Example:
    >>> import diffkit as dk, jax.numpy as jnp
    >>> res = dk.harness.compare(lambda x: jnp.sum(x**2), jnp.ones(3), methods=["jax-rev"],
    ...                          min_time=0.01)
    >>> res[0]["outcome"], res[0]["rho_max"]
    ('ok', 0.0)
"""

from diffkit.harness import gradbench as gradbench  # registers GradBench's evals
from diffkit.harness.estimators import quality as quality
from diffkit.harness.estimators import train as train
from diffkit.harness.measure import TOLERANCE as TOLERANCE
from diffkit.harness.measure import run_case as run_case
from diffkit.harness.memory import MemoryFront as MemoryFront
from diffkit.harness.memory import memory_sweep as memory_sweep
from diffkit.harness.problems import Instance as Instance
from diffkit.harness.problems import Problem as Problem
from diffkit.harness.problems import get_problem as get_problem
from diffkit.harness.problems import problems as problems
from diffkit.harness.problems import register_problem as register_problem
from diffkit.harness.problems import user_problem as user_problem
from diffkit.harness.record import OUTCOMES as OUTCOMES
from diffkit.harness.record import Record as Record
from diffkit.harness.results import Results as Results
from diffkit.harness.results import load as load
from diffkit.harness.sweep import compare as compare
from diffkit.harness.sweep import gradbench_suite as gradbench_suite
from diffkit.harness.sweep import quick_suite as quick_suite
from diffkit.harness.sweep import sweep as sweep
