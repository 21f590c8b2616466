"""The analysis: the recorded runs (own precision and float64) turned into symptoms of the
whole gradient, the culprits that explain them, first culprit first, and notes on local
oddities that do not reach the gradient (NumPy only)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import jax.numpy as jnp
import numpy as np

from diffkit.diagnosis.findings import Diagnosis, Finding
from diffkit.diagnosis.fixes import FIXES
from diffkit.diagnosis.walk import Step

#: Per-element tolerance (rho, scaled by the gradient's size) of a low-precision gradient
#: against the float64 one.
RTOL_LOW = {"float32": 2e-3, "float16": 5e-2, "bfloat16": 1e-1}
#: Tolerance of the dot-product tests against finite differences in float64.
RTOL = 1e-6
#: Layer norms spreading by more than this factor are a vanishing/exploding gradient.
SPREAD = 1e6


def _dot(a: Sequence[Any], b: Sequence[Any], absolute: bool = False) -> float:
    total = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = np.ravel(x), np.ravel(y)
        total += float(np.dot(np.abs(x), np.abs(y)) if absolute else np.dot(x, y))
    return total


def _finite(xs: Sequence[Any]) -> bool:
    return all(np.isfinite(x).all() for x in xs)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class Analysis:
    """Turns the recorded runs into symptoms, culprits and notes (NumPy only)."""

    def __init__(self, prog, prog64, own, ref, dtype: str, wrt: list[bool]) -> None:
        self.prog, self.prog64, self.own, self.ref = prog, prog64, own, ref
        self.dtype, self.low = dtype, dtype != "float64"
        self.wrt = wrt
        self.match = self._align()
        self.symptoms: list[str] = []
        self.culprits: list[Finding] = []
        self.notes: list[Finding] = []

    def _align(self) -> dict[int, int]:
        """own step -> float64 step, by the primitive sequences (equal when the program does
        not depend on the dtype)."""
        if self.prog is self.prog64:
            return {i: i for i in range(len(self.prog.steps))}
        key = lambda s: (s.name, len(s.outs))  # noqa: E731
        a, b = [key(s) for s in self.prog.steps], [key(s) for s in self.prog64.steps]
        match: dict[int, int] = {}
        for blk in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
            match.update((blk.a + k, blk.b + k) for k in range(blk.size))
        return match

    def finding(self, kind: str, i: int, what: str, why: str, prog: Any = None) -> Finding:
        prog = prog or self.prog64
        if i < 0:
            return Finding(kind, -1, "(whole function)", "f", what, why, FIXES[kind])
        step = prog.steps[i]
        return Finding(kind, i, _label(step), step.site, what, why, FIXES[kind])

    # ---------------------------------------------------------------- the checks

    def report(self) -> Diagnosis:
        self.value()
        if not self.symptoms:
            self.non_finite_gradient()
        if not self.symptoms:
            self.against_fd()
        if not self.symptoms and self.low:
            self.low_precision()
        self.layers()
        self.local_notes()
        rep = Diagnosis(self.dtype, len(self.prog.steps), self.symptoms, self.culprits, self.notes)
        rep.layer_norms, rep.layer_site = self.norms, self.norm_site
        return rep

    def value(self) -> None:
        outs = self.own["outs"]
        if _finite(outs):
            return
        self.symptoms.append(f"the value f(x) is not finite in {self.dtype}")
        run, prog = self.own, self.prog
        for i, rec in enumerate(run["steps"]):
            if _finite(rec["ys"]) or not _finite(rec["xs"]):
                continue
            m = self.match.get(i)
            j, y = _first_bad(rec["ys"])
            ref_y = None if m is None else _at(self.ref["steps"][m]["ys"], j)
            root = self._forward_root(i) if self.low else None
            if root is not None:
                self.culprits.append(root)
            elif self.low and ref_y is not None and np.isfinite(ref_y):
                what = (
                    f"its output overflows to {_fmt(y)} in {self.dtype} (element {j[1]}); in "
                    f"float64 it is {_fmt(ref_y)}, beyond {self.dtype}'s largest "
                    f"{_fmt(float(jnp.finfo(self.dtype).max))}"
                )
                self.culprits.append(
                    self.finding("overflow", i, what, "the value is too large for the dtype", prog)
                )
            else:
                x = _inputs_at(rec, j)
                what = f"its output is {_fmt(y)} from finite inputs ({x})"
                why = f"the input is outside the domain of {_label(prog.steps[i])}"
                self.culprits.append(self.finding("non-finite-value", i, what, why, prog))
            return

    def non_finite_gradient(self) -> None:
        for run, prog, name in (
            (self.own, self.prog, self.dtype),
            (self.ref, self.prog64, "float64"),
        ):
            grads = [g for g in run["grads"] if g is not None]
            if _finite(grads):
                continue
            kinds = "NaN" if any(np.isnan(g).any() for g in grads) else "inf"
            self.symptoms.append(f"the gradient has {kinds} entries ({name})")
            self._birth(run, prog)
            return

    def _birth(self, run, prog) -> None:
        steps = run["steps"]
        for i in range(len(steps) - 1, -1, -1):
            rec = steps[i]
            if "y_bar" not in rec:
                continue
            if rec["sum_nan"]:
                what = "the cotangents of its output, summed over the output's uses, give NaN"
                why = "an inf and a -inf cotangent meet (inf - inf)"
                self.culprits.append(self.finding("inf-minus-inf", i, what, why, prog))
            elif _finite(rec["y_bar"]) and not _finite(rec["x_bar"]):
                self.culprits.append(self._classify_birth(run, prog, i))
            if len(self.culprits) >= 5:
                return

    def _classify_birth(self, run, prog, i: int) -> Finding:
        rec = run["steps"][i]
        k, j = _first_bad(rec["x_bar"])[0]
        bad = rec["x_bar"][k].ravel()[j]
        label = _label(prog.steps[i])
        same = len(rec["y_bar"]) == 1 and rec["y_bar"][0].size == rec["x_bar"][k].size
        y_bar = rec["y_bar"][0].ravel()[j] if same else None
        out = rec["ys"][0].ravel()[j] if same and rec["ys"] else None
        x = _inputs_at(rec, (0, j)) if same else "see the inputs"
        m = self.match.get(i) if prog is self.prog else i
        if prog is self.prog and self.low and m is not None:
            ref_bar = self.ref["steps"][m].get("x_bar")
            if ref_bar is not None and _finite(ref_bar):
                root = self._forward_root(i)
                if root is not None:
                    return root
                what = (
                    f"its input cotangent overflows to {_fmt(bad)} in {self.dtype}; in float64 "
                    f"it is {_fmt(ref_bar[k].ravel()[j] if ref_bar[k].size > j else np.nan)}"
                )
                return self.finding("overflow", i, what, "a derivative too large for the dtype")
        if y_bar is not None and y_bar == 0:
            if self._selected(prog, i):
                what = (
                    f"its output at element {j} is {_fmt(cast(float, out))} (input {x}), "
                    f"a value a where/select discards: the cotangent reaching it is 0, but 0 "
                    f"times its derivative there gives {_fmt(bad)}"
                )
                why = "the masked-NaN trap: jnp.where differentiates both branches"
                return self.finding("masked-nan", i, what, why, prog)
            what = (
                f"the cotangent reaching it is 0 at element {j} but its derivative there is "
                f"infinite (input {x}): 0 x inf = {_fmt(bad)}"
            )
            return self.finding("zero-times-inf", i, what, "0 x inf in the chain rule", prog)
        if not _finite(rec["xs"]) or (out is not None and not np.isfinite(out)):
            what = (
                f"an infinite value in its inputs or output ({x}) meets the cotangent: {_fmt(bad)}"
            )
            return self.finding(
                "zero-times-inf", i, what, "inf times a finite or zero cotangent", prog
            )
        what = (
            f"its derivative is infinite at element {j} (input {x}), giving cotangent {_fmt(bad)}"
        )
        why = f"{label} is not differentiable (infinite slope) at this input"
        return self.finding("infinite-derivative", i, what, why, prog)

    def _selected(self, prog, i: int) -> bool:
        """Whether an output of step ``i`` reaches a ``select_n`` (a where) downstream."""
        seen, todo = set(), list(prog.steps[i].outs)
        consumers: dict[int, list[int]] = {}
        for k, s in enumerate(prog.steps):
            for slot in s.ins:
                consumers.setdefault(slot, []).append(k)
        while todo:
            slot = todo.pop()
            for k in consumers.get(slot, []):
                if k in seen or k - i > 50:
                    continue
                seen.add(k)
                if prog.steps[k].name in ("select_n", "clamp"):
                    return True
                todo.extend(prog.steps[k].outs)
        return False

    def _forward_root(self, i: int) -> Finding | None:
        """The earliest step feeding step ``i`` whose own-precision output underflowed to 0
        or overflowed where the float64 one did not."""
        producer = {s: k for k, st in enumerate(self.prog.steps) for s in st.outs}
        found = None
        todo, seen = [i], set()
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            m = self.match.get(k)
            if m is None:
                continue
            rec, ref = self.own["steps"][k], self.ref["steps"][m]
            kind = _lost(rec["ys"], ref["ys"], self.dtype, representable=False)
            if kind is not None and (found is None or k < found[0]):
                found = (k, kind, rec, ref)
            todo.extend(producer[s] for s in self.prog.steps[k].ins if s in producer)
        if found is None or found[0] == i:
            return None
        k, kind, rec, ref = found
        j = kind[1]
        what = (
            f"its output {'underflows to 0' if kind[0] == 'underflow' else 'overflows'} in "
            f"{self.dtype} (element {j[1]}: {_fmt(_at(rec['ys'], j))}); in float64 it is "
            f"{_fmt(_at(ref['ys'], j))}, and a derivative later divides or multiplies by it"
        )
        side = "below the smallest" if kind[0] == "underflow" else "above the largest"
        why = f"the value is {side} number {self.dtype} holds"
        return self.finding(kind[0], k, what, why, self.prog)

    def against_fd(self) -> None:
        ref = self.ref
        g = [x for x in ref["grads"] if x is not None]
        w = ref["whole"]
        u = ref["seed"]
        lhs, rhs = _dot(u, w["c4"]), _dot(g, w["v"])
        bound = RTOL * max(1.0, _dot(u, w["c4"], True)) + 10 * _dot(
            u, _diff(w["c4"], w["c2"]), True
        )
        kl, kr = _dot(u, w["fw"]), _dot(u, w["bw"])
        if _kink(kl, kr, _dot(u, _diff(w["c4"], w["c2"]), True)):
            self.symptoms.append(
                f"the function is not differentiable at this point: one-sided derivatives "
                f"along a random direction are {_fmt(kl)} and {_fmt(kr)}"
            )
            kinks = [i for i, ok in self.local(kink=True) if not ok]
            for i in reversed(kinks):
                rec = ref["steps"][i]
                what = (
                    f"one-sided derivatives of this equation disagree at its input "
                    f"({_inputs_at(rec, _first_gap(rec))})"
                )
                self.culprits.append(self.finding("kink", i, what, "a kink at the checked input"))
            if not kinks:
                why = (
                    "the function jumps or kinks within a finite-difference step of this point "
                    "(a where or comparison switching, relu or abs at 0)"
                )
                self.culprits.append(self.finding("kink", -1, self.symptoms[-1], why))
            return
        if abs(lhs - rhs) <= bound:
            return
        self.symptoms.append(
            f"the gradient disagrees with finite differences (float64): <g, v> = {rhs:.10g}, "
            f"finite differences {lhs:.10g}"
        )
        bad = [i for i, ok in self.local() if not ok]
        for i in reversed(bad):
            self.culprits.append(self._wrong(i))
        if not bad:
            self.culprits.append(self.finding("wrong-gradient", -1, self.symptoms[-1], "unknown"))

    def local(self, kink: bool = False) -> list[tuple[int, bool]]:
        """Per active step with a cotangent: whether its rule passes the dot-product test with
        that cotangent (``kink``: whether its one-sided differences agree)."""
        out = []
        for i, rec in enumerate(self.ref["steps"]):
            if "y_bar" not in rec or "c4" not in rec or self.prog64.steps[i].name in _NO_LOCAL:
                continue
            yb = rec["y_bar"]
            if not (_finite(yb) and _finite(rec["c4"]) and _finite(rec["x_bar"])):
                continue
            if kink:
                kl, kr = _dot(yb, rec["fw"]), _dot(yb, rec["bw"])
                err = _dot(yb, _diff(rec["c4"], rec["c2"]), True)
                out.append((i, not _kink(kl, kr, err)))
                continue
            lhs, rhs = _dot(yb, rec["c4"]), _dot(rec["x_bar"], rec["v"])
            bound = RTOL * max(1.0, _dot(yb, rec["c4"], True))
            bound += 10 * _dot(yb, _diff(rec["c4"], rec["c2"]), True)
            out.append((i, abs(lhs - rhs) <= bound))
        return out

    def _wrong(self, i: int) -> Finding:
        rec = self.ref["steps"][i]
        step = self.prog64.steps[i]
        lhs, rhs = _dot(rec["y_bar"], rec["c4"]), _dot(rec["x_bar"], rec["v"])
        what = (
            f"its derivative rule gives <x_bar, v> = {rhs:.8g}, but finite differences of this "
            f"equation alone give <y_bar, J v> = {lhs:.8g}"
        )
        name = step.name
        if name in ("custom_jvp_call", "custom_vjp_call"):
            fn = step.eqn.params.get("name", "")
            why = (
                f"the custom rule of {fn or 'this function'} disagrees with the derivative of "
                "its own primal"
            )
            found = self.finding("custom-rule", i, what, why)
            rule = _rule_site(step.eqn)  # the rule's own line, where the fix goes
            return replace(found, site=f"{found.site}, {rule}") if rule else found
        if name == "stop_gradient":
            return self.finding(
                "stop-gradient", i, what, "stop_gradient zeroes a derivative the value needs"
            )
        return self.finding("wrong-rule", i, what, f"the rule of {name} disagrees here")

    def low_precision(self) -> None:
        g_own = [x for x in self.own["grads"] if x is not None]
        g64 = [x for x in self.ref["grads"] if x is not None]
        kind = _lost(g_own, g64, self.dtype, relative=True)
        if kind is None:
            return
        (k, j) = kind[1]
        self.symptoms.append(
            f"the {self.dtype} gradient differs from the float64 one: element {j} of "
            f"argument leaf {k} is {_fmt(g_own[k].ravel()[j])}, "
            f"float64 gives {_fmt(g64[k].ravel()[j])}"
        )
        for i in range(len(self.prog.steps) - 1, -1, -1):
            rec, m = self.own["steps"][i], self.match.get(i)
            if "y_bar" not in rec or m is None or "y_bar" not in self.ref["steps"][m]:
                continue
            ref = self.ref["steps"][m]
            if _lost(rec["y_bar"], ref["y_bar"], self.dtype, relative=True) is not None:
                continue
            lost = _lost(rec["x_bar"], ref["x_bar"], self.dtype, relative=True)
            if lost is None:
                continue
            root = self._forward_root(i)
            if root is not None:
                self.culprits.append(root)
                return
            kind2 = (
                "underflow"
                if lost[0] == "underflow"
                else "overflow"
                if lost[0] == "overflow"
                else "underflow"
            )
            jj = lost[1]
            what = (
                f"its input cotangent is {_fmt(_at(rec['x_bar'], jj))} in {self.dtype} at element "
                f"{jj[1]}, {_fmt(_at(ref['x_bar'], jj))} in float64"
            )
            self.culprits.append(
                self.finding(
                    kind2, i, what, "the derivative loses its digits in low precision", self.prog
                )
            )
            return

    def layers(self) -> None:
        self.norms, self.norm_site = [], ""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, step in enumerate(self.prog64.steps):
            if step.eqn is not None and "x_bar" in self.ref["steps"][i]:
                line = step.site.split(", in ")[0]  # the user's line, whichever library call
                groups.setdefault((line, step.name), []).append(i)
        per_site: dict[str, list[list[int]]] = {}
        for (site, name), g in groups.items():
            if name not in _MOVEMENT:
                per_site.setdefault(site, []).append(g)
        # a layer's equations of one line: those occurring once per layer (the fewest times)
        layers = {site: min(map(len, gs)) for site, gs in per_site.items()}
        site = max(layers, key=layers.__getitem__, default="")
        best = [g for g in per_site[site] if len(g) == layers[site]][-1] if site else []
        if len(best) < 3:
            return
        norms = [
            math.sqrt(_dot(self.ref["steps"][i]["x_bar"], self.ref["steps"][i]["x_bar"]))
            for i in best
        ]
        self.norms, self.norm_site = norms, self.prog64.steps[best[0]].site
        if not all(n > 0 and math.isfinite(n) for n in norms):
            return
        spread = norms[0] / norms[-1]
        if 1 / SPREAD <= spread <= SPREAD:
            return
        kind = "vanishing" if spread < 1 else "exploding"
        rate = spread ** (1 / (len(norms) - 1))
        what = (
            f"the cotangent norm goes from {_fmt(norms[-1])} at the last of {len(norms)} "
            f"repetitions to {_fmt(norms[0])} at the first (x{rate:.3g} per repetition)"
        )
        self.symptoms.append(f"{kind} gradient across repeated structure")
        trend = "shrinks" if spread < 1 else "grows"
        why = f"the product of the repeated layers' derivatives {trend} geometrically"
        self.culprits.append(self.finding(kind, best[0], what, why))

    def local_notes(self) -> None:
        """Local findings on a healthy gradient: kinks and rule mismatches whose effects
        cancel or vanish (max_pool's ties on relu zeros), noted, not alarmed."""
        if self.culprits:
            return
        kinks = {i for i, ok in self.local(kink=True) if not ok}
        wrong = {i for i, ok in self.local() if not ok} - kinks
        texts = {
            "kink": "one-sided derivatives of this equation disagree here (a kink)",
            "wrong-rule": "its rule disagrees with its own finite differences here",
        }
        for i in sorted(kinks | wrong):
            kind = "kink" if i in kinks else "wrong-rule"
            self.notes.append(self.finding(kind, i, texts[kind], "no effect on this gradient"))


#: Primitives whose inputs are constrained, so finite differences along a free direction
#: leave their domain: eigh and cholesky read one triangle of a symmetric matrix (their
#: rules assume symmetric tangents), a custom_linear_solve's solve and matvec constants must
#: stay consistent (the LU factors of the matrix). No local check for them.
_NO_LOCAL = frozenset({"eigh", "cholesky", "custom_linear_solve"})

_MOVEMENT = frozenset(
    "slice dynamic_slice gather squeeze reshape broadcast_in_dim convert_element_type "
    "concatenate transpose copy".split()
)


def _label(step: Step) -> str:
    if step.eqn is not None and step.name in ("custom_jvp_call", "custom_vjp_call"):
        name = step.eqn.params.get("name")
        return f"{step.name}[{name}]" if name else step.name
    return step.name


def _rule_site(eqn: Any) -> str:
    """Where a custom rule's derivative is written, e.g. ``its bwd at model.py:15 (square_bwd)``:
    a custom_vjp's bwd or a custom_jvp's jvp (from JAX's debug info; empty if none)."""
    vjp = eqn.primitive.name == "custom_vjp_call"
    rule = eqn.params.get("bwd" if vjp else "jvp_jaxpr_fun")
    info = getattr(getattr(rule, "debug_info", None), "func_src_info", None) or ""
    name, _, where = info.rpartition(" at ")
    return f"its {'bwd' if vjp else 'jvp'} at {where.split('/')[-1]} ({name})" if name else ""


def _kink(left: float, right: float, err: float) -> bool:
    """One-sided derivatives ``left`` and ``right`` disagree by more than 1e-3 (relative)
    and by more than ten times the central rules' error estimate ``err`` (a smooth function
    with a large third derivative moves one-sided rules too, but central ones as much)."""
    gap = abs(left - right)
    return gap > 1e-3 * max(1.0, abs(left) + abs(right)) and gap > 10.0 * err


def _diff(a: Sequence[Any], b: Sequence[Any]) -> list[Any]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _first_bad(xs: Sequence[Any]) -> tuple[tuple[int, int], float]:
    for k, x in enumerate(xs):
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            return (k, int(bad[0])), float(x.ravel()[bad[0]])
    return (0, 0), float("nan")


def _at(xs: Sequence[Any], j: tuple[int, int]) -> float:
    k, i = j
    return float(xs[k].ravel()[i]) if k < len(xs) and i < xs[k].size else float("nan")


def _inputs_at(rec: dict[str, Any], j: tuple[int, int]) -> str:
    vals = []
    for x in rec["xs"]:
        vals.append(_fmt(float(x.ravel()[j[1]])) if x.size > j[1] else "")
    return "x = " + ", ".join(v for v in vals if v)


def _first_gap(rec: dict[str, Any]) -> tuple[int, int]:
    for k, (a, b) in enumerate(zip(rec["fw"], rec["bw"], strict=True)):
        gap = np.abs(a - b).ravel()
        if gap.size:
            return (k, int(np.argmax(gap)))
    return (0, 0)


def _lost(
    own: Sequence[Any],
    ref: Sequence[Any],
    dtype: str,
    relative: bool = False,
    representable: bool = True,
) -> tuple[str, tuple[int, int]] | None:
    """``("underflow" | "overflow" | "precision", (leaf, element))`` for the first element
    where ``own`` lost what ``ref`` holds (a zero counts where ``ref`` is representable, or
    anywhere but at exact zeros with ``representable=False``), or None."""
    info = jnp.finfo(dtype)
    small = float(info.tiny) if representable else np.finfo(np.float64).tiny
    for k, (a, b) in enumerate(zip(own, ref, strict=True)):
        a, b = a.ravel(), b.ravel()
        if a.shape != b.shape:
            continue
        under = np.flatnonzero((a == 0) & (np.abs(b) >= small) & np.isfinite(b))
        if under.size:
            return "underflow", (k, int(under[0]))
        over = np.flatnonzero(~np.isfinite(a) & np.isfinite(b))
        if over.size:
            return "overflow", (k, int(over[0]))
        if relative and b.size:
            scale = max(float(np.max(np.abs(b), initial=0.0)), float(info.tiny))
            rho = np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-3 * scale)
            worse = np.flatnonzero(rho > RTOL_LOW.get(dtype, 2e-3))
            if worse.size:
                return "precision", (k, int(worse[0]))
    return None
