"""Colouring: which columns (or rows) of a sparse Jacobian one pass may compute together.

* :func:`colour_columns` -- distance-2 colouring of the bipartite graph (columns that share a
  row get different colours): one JVP per colour, seeded with the sum of its columns;
* :func:`colour_rows` -- the same for rows: one VJP per colour;
* :func:`colour_star` -- star colouring of a symmetric Hessian's adjacency graph (distance-1,
  and every path on four vertices uses three colours or more; Gebremedhin, Manne & Pothen,
  "What color is your Jacobian?", SIAM Review 2005, algorithm 4.1): fewer colours than a
  column colouring, each entry recovered directly from ``H S`` (or from its mirror).

All are greedy in a vertex order: ``"natural"``, ``"largest-first"`` (by degree),
``"smallest-last"`` (a degeneracy order), or ``"best"`` -- all three, keeping the fewest
colours.

Example:
    >>> import numpy as np, scipy.sparse as sp
    >>> band = sp.csr_array(np.eye(6, dtype=bool) | np.eye(6, k=1, dtype=bool))
    >>> c = colour_columns(band)
    >>> c.n_colours, c.colours.tolist()
    (2, [0, 1, 0, 1, 0, 1])
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from diffkit._core.errors import DiffkitError

__all__ = [
    "ORDERS",
    "Colouring",
    "check_colouring",
    "colour_columns",
    "colour_rows",
    "colour_star",
]

ORDERS = ("natural", "largest-first", "smallest-last")


@dataclass(frozen=True)
class Colouring:
    """A colouring: ``colours[v]`` for each column (``kind="column"``), row (``"row"``) or
    Hessian vertex (``"star"``), ``n_colours`` of them, found in vertex ``order``."""

    colours: np.ndarray
    n_colours: int
    kind: str
    order: str

    def seeds(self) -> np.ndarray:
        """The ``(n_colours, len(colours))`` 0/1 seed matrix: row ``k`` sums colour ``k``."""
        s = np.zeros((self.n_colours, self.colours.size))
        s[self.colours, np.arange(self.colours.size)] = 1.0
        return s


def _pattern(pattern: Any) -> Any:
    try:
        p = sp.csr_array(pattern, dtype=bool)
    except Exception as error:
        raise DiffkitError(
            f"colouring: the pattern must be a 2-D boolean matrix (scipy.sparse, NumPy or "
            f"BCOO.todense()), got {type(pattern).__name__} ({error})"
        ) from None
    if p.ndim != 2:
        raise DiffkitError(f"colouring: the pattern must be 2-D, got shape {p.shape}")
    return p


def _adjacency(graph: Any) -> tuple[list[int], list[int]]:
    """``indptr``/``indices`` of a graph's adjacency, without self-loops, as Python lists."""
    g = sp.csr_array(graph, dtype=bool, copy=True)
    g.setdiag(False)
    g.eliminate_zeros()
    g.sort_indices()
    return g.indptr.tolist(), g.indices.tolist()


def _order(indptr: list[int], indices: list[int], order: str) -> list[int]:
    n = len(indptr) - 1
    degree = np.diff(np.asarray(indptr))
    if order == "natural":
        return list(range(n))
    if order == "largest-first":
        return np.argsort(-degree, kind="stable").tolist()
    if order == "smallest-last":  # repeatedly remove a vertex of smallest remaining degree
        deg = degree.tolist()
        heap = [(d, v) for v, d in enumerate(deg)]
        heapq.heapify(heap)
        gone = [False] * n
        removed = []
        while heap:
            d, v = heapq.heappop(heap)
            if gone[v] or d != deg[v]:
                continue
            gone[v] = True
            removed.append(v)
            for w in indices[indptr[v] : indptr[v + 1]]:
                if not gone[w]:
                    deg[w] -= 1
                    heapq.heappush(heap, (deg[w], w))
        return removed[::-1]
    raise DiffkitError(
        f"colouring: order must be one of {', '.join(ORDERS)} or 'best', got {order!r}"
    )


def _greedy(indptr: list[int], indices: list[int], order: list[int]) -> np.ndarray:
    """Distance-1 greedy colouring of a graph in ``order``."""
    n = len(indptr) - 1
    colour = [-1] * n
    mark = [-1] * (n + 1)
    for v in order:
        for w in indices[indptr[v] : indptr[v + 1]]:
            c = colour[w]
            if c >= 0:
                mark[c] = v
        c = 0
        while mark[c] == v:
            c += 1
        colour[v] = c
    return np.asarray(colour, np.int64)


def _star(indptr: list[int], indices: list[int], order: list[int]) -> np.ndarray:
    """Greedy star colouring (GMP 2005, algorithm 4.1)."""
    n = len(indptr) - 1
    colour = [-1] * n
    mark = [-1] * (n + 1)
    for v in order:
        for w in indices[indptr[v] : indptr[v + 1]]:
            cw = colour[w]
            if cw >= 0:
                mark[cw] = v
            for x in indices[indptr[w] : indptr[w + 1]]:
                cx = colour[x]
                if x == v or cx < 0:
                    continue
                if cw < 0:
                    mark[cx] = v
                else:
                    for y in indices[indptr[x] : indptr[x + 1]]:
                        if y != w and colour[y] == cw:
                            mark[cx] = v
                            break
        c = 0
        while mark[c] == v:
            c += 1
        colour[v] = c
    return np.asarray(colour, np.int64)


def _best(graph: Any, order: str, kind: str, star: bool = False) -> Colouring:
    indptr, indices = _adjacency(graph)
    orders = ORDERS if order == "best" else (order,)
    found = []
    for o in orders:
        vertex_order = _order(indptr, indices, o)
        colours = (_star if star else _greedy)(indptr, indices, vertex_order)
        found.append(Colouring(colours, int(colours.max()) + 1 if colours.size else 0, kind, o))
    return min(found, key=lambda c: c.n_colours)


def colour_columns(pattern: Any, order: str = "best") -> Colouring:
    """Distance-2 column colouring of a Jacobian pattern (columns sharing a row differ).

    Example:
        >>> import numpy as np
        >>> colour_columns(np.array([[1, 1, 0], [0, 1, 1]], bool)).colours.tolist()
        [0, 1, 0]
    """
    p = _pattern(pattern)
    return _best(p.T @ p, order, "column")


def colour_rows(pattern: Any, order: str = "best") -> Colouring:
    """Distance-2 row colouring of a Jacobian pattern (rows sharing a column differ).

    Example:
        >>> import numpy as np
        >>> colour_rows(np.array([[1, 0], [1, 1], [0, 1]], bool)).colours.tolist()
        [0, 1, 0]
    """
    p = _pattern(pattern)
    return _best(p @ p.T, order, "row")


def colour_star(pattern: Any, order: str = "best") -> Colouring:
    """Star colouring of a symmetric (Hessian) pattern.

    Example:
        >>> import numpy as np
        >>> arrow = np.eye(5, dtype=bool); arrow[0, :] = arrow[:, 0] = True
        >>> colour_star(arrow).n_colours  # the hub, then every leaf together
        2
    """
    p = _pattern(pattern)
    if p.shape[0] != p.shape[1] or (p != p.T).nnz:
        raise DiffkitError(
            f"colour_star: the pattern must be square and symmetric (a Hessian's), got shape "
            f"{p.shape}; use colour_columns for a Jacobian"
        )
    return _best(p, order, "star", star=True)


def check_colouring(pattern: Any, colouring: Colouring) -> bool:
    """Whether ``colouring`` is valid for ``pattern``: structurally orthogonal columns (or
    rows) within a colour; for a star colouring, distance-1 and no two-coloured path on
    four vertices.

    Example:
        >>> import numpy as np
        >>> p = np.array([[1, 1], [0, 1]], bool)
        >>> check_colouring(p, Colouring(np.array([0, 0]), 1, "column", "natural"))
        False
    """
    p = _pattern(pattern)
    c = colouring.colours
    if colouring.kind in ("column", "row"):
        q = p if colouring.kind == "column" else sp.csr_array(p.T)
        coo = q.tocoo()
        pairs = np.stack([coo.row, c[coo.col]], axis=1)
        return len(np.unique(pairs, axis=0)) == len(pairs)
    indptr, indices = _adjacency(p)
    n = len(indptr) - 1
    for v in range(n):
        nb = indices[indptr[v] : indptr[v + 1]]
        if any(c[w] == c[v] for w in nb):
            return False
    for v in range(n):  # a path v-w-x-y coloured a, b, a, b
        for w in indices[indptr[v] : indptr[v + 1]]:
            for x in indices[indptr[w] : indptr[w + 1]]:
                if x == v or c[x] != c[v]:
                    continue
                for y in indices[indptr[x] : indptr[x + 1]]:
                    if y != w and c[y] == c[w]:
                        return False
    return True
