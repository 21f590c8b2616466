"""diffkit's pytest plugin (registered through the ``pytest11`` entry point).

* the ``gradcheck`` fixture: :func:`diffkit.testing.check_grads` with project-wide defaults;
* ini options ``diffkit_gradcheck_rtol``, ``diffkit_gradcheck_atol``,
  ``diffkit_gradcheck_modes``, ``diffkit_gradcheck_directions``, ``diffkit_gradcheck_mesh``
  (a device count: sharding-invariance checks as well; in ``pytest.ini`` or
  ``[tool.pytest.ini_options]``);
* the marker ``@pytest.mark.gradcheck(rtol=..., modes=..., ...)`` to override them per test;
* a failed gradient check's report gets a "gradient doctor" section: the doctor's findings
  (:func:`diffkit.diagnosis.doctor`), first culprit first, with the equation and source line.

Example (in a test file)::

    @pytest.mark.gradcheck(rtol=1e-5)
    def test_my_rule(gradcheck):
        gradcheck(my_function, (x,))
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from diffkit._core.errors import DiffkitError
from diffkit.testing import GradCheckError, check_grads

#: Options the marker may set: check_grads's keyword arguments.
OPTIONS = tuple(
    name
    for name, p in inspect.signature(check_grads).parameters.items()
    if p.kind is p.KEYWORD_ONLY
)

_INI: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "rtol": ("diffkit_gradcheck_rtol", float, "per-element tolerance of check_grads (rho)"),
    "atol": ("diffkit_gradcheck_atol", float, "absolute per-element tolerance of check_grads"),
    "modes": (
        "diffkit_gradcheck_modes",
        lambda s: tuple(s.replace(",", " ").split()),
        "modes checked by default: fwd, rev or both",
    ),
    "directions": ("diffkit_gradcheck_directions", int, "random directions per check"),
    "mesh": ("diffkit_gradcheck_mesh", int, "devices: also check sharded against unsharded"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    for ini_name, _, help_text in _INI.values():
        parser.addini(ini_name, help_text, default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gradcheck(**options): options for the gradcheck fixture in this test "
        "(rtol, atol, modes, order, methods, reference, directions, seed)",
    )


def gradcheck_options(config: Any, node: Any) -> dict[str, Any]:
    """check_grads's options from the ini file and the test's ``gradcheck`` markers (the
    nearest marker wins); a bad value or an unknown option is a one-line DiffkitError."""
    options: dict[str, Any] = {}
    for key, (ini_name, convert, _) in _INI.items():
        value = config.getini(ini_name)
        if value not in (None, "", []):
            try:
                options[key] = convert(value)
            except ValueError:
                kind = getattr(convert, "__name__", "list")
                raise DiffkitError(
                    f"pytest configuration: {ini_name} = {value!r} is not a valid {kind}; "
                    f"fix it in pytest.ini or [tool.pytest.ini_options] ({_INI[key][2]})"
                ) from None
    for marker in reversed(list(node.iter_markers("gradcheck"))):
        if marker.args:
            raise DiffkitError(
                f"@pytest.mark.gradcheck takes keyword options only ({', '.join(OPTIONS)}), "
                f"got positional {marker.args!r}"
            )
        unknown = sorted(set(marker.kwargs) - set(OPTIONS))
        if unknown:
            raise DiffkitError(
                f"@pytest.mark.gradcheck: unknown option(s) {', '.join(unknown)}; "
                f"the options are: {', '.join(OPTIONS)}"
            )
        options.update(marker.kwargs)
    return options


@pytest.fixture
def gradcheck(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``gradcheck(f, args, **options)``: check_grads with the project's and marker's options."""
    return functools.partial(check_grads, **gradcheck_options(request.config, request.node))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Add the gradient doctor's report to a test failed by :func:`check_grads`."""
    outcome = yield
    report = outcome.get_result()
    error = call.excinfo.value if call.excinfo is not None else None
    if isinstance(error, GradCheckError) and error.report is not None:
        report.sections.append(("gradient doctor", str(error.report)))
