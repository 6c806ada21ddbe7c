"""Output paths that never overwrite an input, and temporaries no tool mistakes for a finished file.

``check_output_file`` is the up-front check of an output file (``impute --out``): not a directory,
a writable place, and never the same file as an input (by another path or a symlink too: compared
with ``os.path.samefile`` where both exist, resolved paths otherwise). ``partial_path`` names the
temporary a writer fills before the final rename: hidden, in the same directory (so the rename is
atomic), ending in ``.partial-<pid>`` rather than ``.vcf.gz``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from .errors import InputError

__all__ = [
    "INDEX_SUFFIXES",
    "check_output_file",
    "partial_file",
    "partial_path",
    "remove_quietly",
    "same_file",
]

INDEX_SUFFIXES = (".tbi", ".csi")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file (symlinks, hard links, ``..`` and relative paths too)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def partial_path(path: str | os.PathLike) -> str:
    """``dir/.NAME.partial-<pid>``: the temporary written before ``os.replace`` onto ``path``."""
    head, name = os.path.split(os.fspath(path))
    return os.path.join(head, f".{name}.partial-{os.getpid()}")


@contextlib.contextmanager
def partial_file(path: str | os.PathLike) -> Iterator[str]:
    """``with partial_file(out) as tmp:`` write ``tmp``, then rename it onto ``out`` inside the block.

    On any exception (KeyboardInterrupt too) ``tmp`` and an index made on it are removed, so an
    interrupted write leaves nothing that looks like output.
    """
    tmp = partial_path(path)
    try:
        yield tmp
    except BaseException:
        remove_quietly(tmp, *(tmp + s for s in INDEX_SUFFIXES))
        raise


def remove_quietly(*paths: str | os.PathLike | None) -> None:
    """Remove each path that exists; never raises (used while another error is on its way out)."""
    for p in paths:
        if p is not None:
            with contextlib.suppress(OSError):
                os.unlink(p)


def _with_indexes(path: str) -> list[str]:
    return [path] + [path + s for s in INDEX_SUFFIXES]


def check_output_file(
    path: str | os.PathLike, inputs: dict[str, str | os.PathLike | None], flag: str = "--out"
):
    """Refuse, as a one-line ``InputError``, an output file that cannot or must not be written.

    ``inputs`` maps a flag (``--ref``) to its path (None: not given). The output, its index
    (``.tbi``/``.csi``) and its partial temporary are compared with every input and the inputs'
    indexes, so an output never replaces an input.
    """
    path = os.fspath(path)
    if not path or path.endswith(os.sep):
        raise InputError(
            path or "''", f"{flag} names a directory, not a file", f"give a file, e.g. {flag} imputed.vcf.gz"
        )
    if os.path.isdir(path):
        raise InputError(
            path,
            f"{flag} is a directory",
            f"give a file inside it, e.g. {flag} {os.path.join(path, 'imputed.vcf.gz')}",
        )
    outputs = _with_indexes(path) + [partial_path(path)]
    for role, given in inputs.items():
        if given is None:
            continue
        for inp in _with_indexes(os.fspath(given)):
            for out in outputs:
                if not same_file(out, inp):
                    continue
                if out == path and inp == os.fspath(given):
                    problem = f"{flag} is the {role} file {given}"
                else:
                    problem = f"{flag} would overwrite {inp}, beside the {role} file {given}"
                raise InputError(
                    path, problem + " (an output never replaces an input)", f"choose another {flag} file name"
                )
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # missing directories are created: check the nearest existing one
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(path, f"{flag}: {parent} is a file, not a directory", f"choose another {flag} path")
    if os.path.isdir(os.path.dirname(os.path.abspath(path))):  # try it: read-only mounts, /proc, quotas...
        probe = partial_path(path)
        try:
            with open(probe, "xb"):
                pass
        except FileExistsError:
            pass
        except OSError as exc:
            raise InputError(
                path, f"{flag} cannot be written ({exc.strerror or exc})", f"choose a writable {flag} directory"
            ) from None
        else:
            remove_quietly(probe)
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            path, f"{flag}: no permission to write in {parent}", f"choose a writable {flag} directory"
        )
