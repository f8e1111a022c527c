"""nt-harness: which reasoning traces should a student learn from?"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("nt_harness")
"""Marker for plugin hook implementations: ``@nt_harness.hookimpl``."""


class UserError(RuntimeError):
    """A problem the user can fix (a path, a file, a server), not a bug: the CLI shows its message as one line."""
