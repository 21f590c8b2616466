"""diffkit's private core: the errors, the differentiator interface and its registry, pytrees
and the traced function, and the jaxpr interpreter. Everything else builds on these modules;
they import nothing of diffkit outside ``_core``."""
