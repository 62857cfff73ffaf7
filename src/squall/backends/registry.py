"""Backends by name (the spec's ``backend``): a new backend is a package and one line here (or, from another
package, an entry point in ``squall.backends``).

A backend registers its class (:class:`~squall.backends.base.BackendKind`): it
names the options it takes (:class:`~squall.backends.base.BackendOptions`),
which nest under it in a spec, and builds itself from a spec.
"""

from __future__ import annotations

from squall.backends.base import BackendKind
from squall.errors import SpecError
from squall.registry import Plugin, Registry

BACKENDS: Registry[BackendKind] = Registry("backend", "squall.backends", (
    Plugin("local", "squall.backends.local.backend:LocalBackend"),
    Plugin("ray", "squall.backends.ray.backend:RayBackend", "ray"),
    Plugin("sqs", "squall.backends.sqs.backend:SqsBackend", "aws"),
), error=SpecError)

