"""The registry: names -> differentiator classes.

The built-in differentiators register themselves when ``diffkit.differentiators`` is
imported; that happens on the first look-up (by module name, through importlib), so this
module imports only the contract (:mod:`diffkit._core.interface`) and the import graph of the
package has no circle. Third-party packages register with :func:`register`, through the
``diffkit.differentiators`` entry point group, or are named as ``"module:Class"``
(:func:`resolve`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar, get_args

from diffkit._core.errors import DiffkitError, UnknownDifferentiatorError
from diffkit._core.interface import Differentiator, Mode

__all__ = ["get", "names", "options", "register", "resolve", "unregister"]

#: The package whose import registers the built-in differentiators.
BUILT_INS = "diffkit.differentiators"

_REGISTRY: dict[str, type[Differentiator]] = {}
_loaded = [False]  # the built-ins and the entry points, once
D = TypeVar("D", bound=type[Differentiator])


def register(name: str) -> Callable[[D], D]:
    """Class decorator that registers a differentiator under ``name`` (third parties too;
    packages may also advertise one through the ``diffkit.differentiators`` entry point group).

    Example:
        >>> import diffkit as dk, jax
        >>> @dk.register("my-rev")
        ... class MyRev(dk.Differentiator):
        ...     mode, native = "reverse", frozenset({"vjp"})
        ...     def _vjp(self, fun, primals):
        ...         outs, vjp_fn, aux = jax.vjp(fun, *primals, has_aux=True)
        ...         return outs, vjp_fn, aux
        >>> float(dk.get("my-rev").grad(lambda x: x**2)(3.0))
        6.0
        >>> dk.unregister("my-rev")
    """
    if not isinstance(name, str) or not name:
        raise DiffkitError(f"register: name must be a non-empty string, got {name!r}")

    def decorate(cls: D) -> D:
        if not (isinstance(cls, type) and issubclass(cls, Differentiator)):
            raise DiffkitError(f"register({name!r}): {cls!r} is not a Differentiator subclass")
        if not cls.native:
            raise DiffkitError(f"register({name!r}): {cls.__name__}.native names no primitive")
        if getattr(cls, "mode", None) not in get_args(Mode):
            raise DiffkitError(
                f"register({name!r}): {cls.__name__}.mode must be one of "
                "numerical, symbolic, forward, reverse, stochastic"
            )
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise DiffkitError(
                f"register: the name {name!r} is taken by {_REGISTRY[name].__name__}"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def unregister(name: str) -> None:
    """Remove a registered differentiator (mainly for tests and plugins).

    Example:
        >>> unregister("no-such-name")  # unknown names are ignored
    """
    _REGISTRY.pop(name, None)


def _load() -> None:
    """Register the built-in differentiators and, once, the plugins' entry points."""
    if _loaded[0]:
        return
    _loaded[0] = True
    importlib.import_module(BUILT_INS)  # the built-ins register themselves
    for ep in entry_points(group="diffkit.differentiators"):
        if ep.name not in _REGISTRY:
            register(ep.name)(ep.load())


def names() -> list[str]:
    """Names of every registered differentiator, sorted.

    Example:
        >>> import diffkit as dk
        >>> {"jax-fwd", "jax-rev"} <= set(dk.names())
        True
    """
    _load()
    return sorted(_REGISTRY)


def get(name: str, **options: Any) -> Differentiator:
    """A differentiator by name, configured with keyword options.

    Example:
        >>> import diffkit as dk
        >>> d = dk.get("jax-fwd", chunk_size=64)
        >>> d.name, d.mode
        ('jax-fwd', 'forward')
    """
    _load()
    if name not in _REGISTRY:
        raise UnknownDifferentiatorError(
            f"unknown differentiator {name!r}; choose one of: {', '.join(names())}"
        )
    cls = _REGISTRY[name]
    params = _options(cls)
    unknown = sorted(set(options) - set(params))
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise DiffkitError(
            f"{name}: unknown option{plural} {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(params) or '(none)'}"
        )
    return cls(**options)


def _options(cls: type[Differentiator]) -> list[str]:
    """Keyword options accepted by a differentiator's constructor (its whole MRO)."""
    found: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in found:
                found.append(p.name)
    return found


def options(name: str) -> list[str]:
    """The keyword options ``dk.get(name, ...)`` accepts.

    Example:
        >>> import diffkit as dk
        >>> "chunk_size" in dk.options("jax-fwd")
        True
    """
    get(name)  # raises the usual error for an unknown name
    return _options(_REGISTRY[name])


def resolve(spec: str, **options: Any) -> Differentiator:
    """A differentiator from a registered name or a ``"module:Class"`` import path (the
    module is imported, which registers the class; an unregistered class is registered under
    ``spec``), so a worker process can load a differentiator defined outside diffkit.

    Example:
        >>> resolve("diffkit.differentiators.jax_ad:JaxReverse").name
        'jax-rev'
    """
    if ":" not in spec:
        return get(spec, **options)
    module, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise DiffkitError(f"method {spec!r}: cannot import it: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Differentiator)):
        raise DiffkitError(f"method {spec!r} is not a Differentiator subclass")
    if cls.name == "?":
        register(spec)(cls)
    return get(cls.name, **options)
