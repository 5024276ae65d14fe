"""Reading host paths only under folders the operator allowed.

A caller (a model's tool call, an MCP client, an API request) names a path; the operator
who made the tool or started the server fixed the folders it may come from. A path is
accepted only if its real location (every symlink followed) lies under one of those
roots and is a regular file or a folder: a ``..`` or a symlink that leads out of a root
is refused, and so are ``/proc``, ``/sys`` and ``/dev`` even under a root of ``/``
(``/proc/self/environ`` holds the keys) and FIFOs, sockets and devices anywhere (reading
a FIFO blocks forever). The check runs when the call arrives; whoever can change the
files under a root between the check and the read is the operator, who is trusted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from rlm_graph.storage.contexts import ContextError

# Kernel and device file systems: never a context, whatever the roots say.
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))

PathLike = str | os.PathLike[str]


def check_roots(roots: Sequence[PathLike]) -> tuple[Path, ...]:
    """The operator's roots, resolved; each must be an existing folder outside the system ones."""
    resolved = []
    for root in roots:
        path = Path(root).expanduser().resolve()
        if not path.is_dir():
            raise ContextError(f"allowed folder {str(root)!r} is not an existing folder")
        if _in_system_folder(path):
            raise ContextError(f"allowed folder {str(root)!r} is a kernel or device folder")
        resolved.append(path)
    return tuple(resolved)


def confine(path: PathLike, roots: Sequence[PathLike]) -> Path:
    """The real path of ``path`` if it may be read under ``roots``; else a ContextError.

    A relative ``path`` is taken relative to the first root. The answer is a regular file
    or a folder (a folder's own symlinks are skipped when it is read, see
    ``contexts.read_directory``).
    """
    allowed = check_roots(roots)
    if not allowed:
        raise ContextError("no folder is allowed: reading files was not enabled")
    given = Path(path).expanduser()
    try:
        real = (given if given.is_absolute() else allowed[0] / given).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
        raise ContextError(f"path {str(path)!r} cannot be resolved: {exc}") from exc
    if not within(real, allowed):
        where = ", ".join(str(root) for root in allowed)
        raise ContextError(f"path {str(path)!r} is outside the allowed folders ({where})")
    try:
        mode = real.stat().st_mode
    except OSError as exc:
        raise ContextError(f"path {str(path)!r} cannot be read: {exc.strerror}") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ContextError(f"path {str(path)!r} is not a regular file or a folder")
    return real


def within(real: Path, roots: Sequence[Path]) -> bool:
    """Whether a resolved path lies under one of resolved ``roots``, outside system folders."""
    return not _in_system_folder(real) and any(real.is_relative_to(root) for root in roots)


def _in_system_folder(path: Path) -> bool:
    return any(path.is_relative_to(system) for system in SYSTEM_FOLDERS)
