"""The doctor's answer: :class:`Finding` (one diagnosis: the equation, the user's source
line, what is wrong, why, and the fix) and :class:`Diagnosis` (symptoms, culprits and notes
of one call of :func:`~diffkit.diagnosis.doctor`), and their printed forms."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    """One diagnosis: which equation (``step`` in the walk; ``-1`` for the whole function),
    its ``primitive``, the user's source ``site``, ``what`` is wrong, ``why``, and a ``fix``."""

    kind: str
    step: int
    primitive: str
    site: str
    what: str
    why: str
    fix: str

    def __str__(self) -> str:
        where = (
            "the whole function"
            if self.step < 0
            else f"equation {self.step} ({self.primitive}) at {self.site}"
        )
        return (
            f"[{self.kind}] {where}\n"
            f"    what: {self.what}\n    why:  {self.why}\n    fix:  {self.fix}"
        )


@dataclass
class Diagnosis:
    """The doctor's findings: ``ok`` is False when anything is wrong; ``culprits`` lists the
    findings that explain the symptoms, first culprit first; ``notes`` the local oddities
    that do not reach the gradient; ``layer_norms`` the cotangent norm per repetition of the
    most repeated source line (scan steps, repeated blocks), forward order."""

    dtype: str
    equations: int
    symptoms: list[str] = field(default_factory=list)
    culprits: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    layer_norms: list[float] = field(default_factory=list)
    layer_site: str = ""
    remarks: list[str] = field(default_factory=list)  # limits of this diagnosis
    output: str = ""  # f's output when not a scalar ("an array of shape (3,)")

    @property
    def ok(self) -> bool:
        return not self.symptoms and not self.culprits

    @property
    def first(self) -> Finding | None:
        """The first culprit, or None."""
        return self.culprits[0] if self.culprits else None

    def __str__(self) -> str:
        head = f"gradient doctor: {self.equations} equations walked, {self.dtype}"
        if self.ok and self.output:
            lines = [
                f"{head}: f returns {self.output}, not a scalar loss, so only one "
                "vector-Jacobian product (a random cotangent) was checked and is healthy; pass "
                "a scalar loss, or check each output: doctor(lambda x: f(x)[i], x)"
            ]
        elif self.ok:
            lines = [head + ": the gradient is healthy (finite, matches finite differences)"]
        else:
            lines = [head, "symptoms:", *(f"  - {s}" for s in self.symptoms)]
            if self.culprits:
                lines.append("first culprit:")
                lines.append("  " + str(self.culprits[0]).replace("\n", "\n  "))
                for c in self.culprits[1:]:
                    lines.append(f"  also: [{c.kind}] {c.primitive} at {c.site}")
        for n in self.notes:
            lines.append(f"note: [{n.kind}] {n.primitive} at {n.site}: {n.what}")
        lines += [f"note: {r}" for r in self.remarks]
        if self.output and not self.ok:
            lines.append(f"note: f returns {self.output}: checked along a random cotangent")
        return "\n".join(lines)
