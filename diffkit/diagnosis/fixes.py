"""The suggested fixes: one text per kind of finding (``Finding.kind``), what to change in
the user's code to cure it. The texts saying what is wrong and why are written where the
finding is made, from the numbers recorded (:mod:`diffkit.diagnosis.analysis`)."""

from __future__ import annotations

#: Finding kind -> the fix suggested to the user.
FIXES = {
    "masked-nan": (
        "use the double where: make the unselected branch's input safe before the "
        "operation, e.g. jnp.where(mask, jnp.sqrt(jnp.where(mask, x, 1.0)), 0.0)"
    ),
    "infinite-derivative": (
        "keep the input away from the singular point (add a small eps, e.g. "
        "jnp.sqrt(s + 1e-12)), or write the derivative you want with jax.custom_jvp "
        "(a safe norm), or jnp.where the point out before the operation"
    ),
    "zero-times-inf": (
        "an infinite intermediate multiplies a zero: avoid producing inf (clip, or compute "
        "in log space: logsumexp, log1p, xlogy) before it is multiplied"
    ),
    "inf-minus-inf": (
        "two infinite cotangents of opposite sign meet: keep the intermediate finite "
        "(compute in log space, or rescale) so that its derivatives stay finite"
    ),
    "non-finite-value": (
        "the value itself is NaN or inf: keep the input inside the operation's domain "
        "(jnp.where the bad entries out before it, or clip)"
    ),
    "overflow": (
        "compute this step in float32 (x.astype(jnp.float32)), rescale before it (e.g. "
        "divide by the largest |x| first, as a stable norm does), or use a wider dtype"
    ),
    "underflow": (
        "compute this step in float32/float64 or in log space (log1p, expm1, logsumexp), "
        "or rescale the inputs so the intermediate stays above the dtype's smallest normal"
    ),
    "custom-rule": (
        "fix the custom rule (its fwd/bwd or jvp) so that it matches the derivative of its "
        "own primal; check it alone with diffkit.testing.check_grads"
    ),
    "stop-gradient": (
        "remove the stop_gradient (or move it to the value that should be constant): it "
        "blocks a derivative the function's value depends on"
    ),
    "wrong-rule": (
        "the primitive's derivative rule disagrees with finite differences here; check the "
        "point (near a singularity?) or report the rule"
    ),
    "kink": (
        "the function is not differentiable at this point: check at a point away from the "
        "kink, or smooth it (softplus for relu, a Huber loss for abs)"
    ),
    "vanishing": (
        "the gradient shrinks geometrically through the repeated layers: use a residual "
        "connection, a normalization, a better initialization or a non-saturating activation"
    ),
    "exploding": (
        "the gradient grows geometrically through the repeated layers: clip gradients, "
        "normalize, or initialize the layers with a smaller scale"
    ),
    "wrong-gradient": (
        "no single equation disagrees with its own finite differences; check the "
        "derivative rules of the whole function with diffkit.testing.check_grads"
    ),
}
