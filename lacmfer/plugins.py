"""Plugins: modules outside the package that register methods, validators, domains or
searched parameters (README "Extending").

Registrations live in the process that made them, and each Ray trial or final-training
run validates its config again in a fresh worker. So plugins are imported wherever a
config is validated, before it is (`lacmfer.config.config_from_dict`): by the driver
and by every worker alike. Two ways to name one:

- the config's `plugins: [my_pkg.my_module]`, module paths that every node can import
  (installed, on PYTHONPATH, or shipped by `cluster.runtime_env`);
- an installed package's entry point in the group `lacmfer.plugins`, imported in every
  process where that package is installed.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from importlib.metadata import entry_points

from lacmfer.errors import UserError

ENTRY_POINT_GROUP = "lacmfer.plugins"


def import_plugins(modules: Sequence[str], source: str) -> None:
    """Import every installed entry-point plugin and each module of `modules` (once per
    process); a module that cannot be imported is a UserError naming it and `source`."""
    _load_entry_points()
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - whatever stops the import, the user must fix the plugin or its path
            raise UserError(f"{source}: plugins: cannot import {module!r} ({type(err).__name__}: {err})") from None


@functools.cache
def _load_entry_points() -> None:
    # Cached only once every entry point loaded: a failure is reported again at the next config.
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as err:  # noqa: BLE001 - as above: the installed plugin is broken
            raise UserError(f"entry point {point.name} = {point.value} (group {ENTRY_POINT_GROUP}, package "
                            f"{point.dist.name if point.dist else 'unknown'}): cannot import it "
                            f"({type(err).__name__}: {err})") from None
