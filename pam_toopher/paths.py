"""Open a file only through directories that no other user can change.

The config (which says whom to trust and whether to fail open), the CA
bundle (which says which server to believe) and the audit file are only as
safe as the directories above them: whoever may write to ``/etc/security``
can ``mv`` another file over the config without touching the file itself.
So, like sshd's StrictModes, every component of the path is checked, walking
down from ``/`` one descriptor at a time (``openat`` with ``O_NOFOLLOW``) so
that what is checked is what is then opened:

* every directory is owned by a trusted owner (root);
* no directory is writable by group or others -- except a sticky one such as
  ``/tmp``, and only where the next component is owned by root, because in a
  sticky directory nobody else can rename or remove root's entries;
* a symbolic link is followed only when it lies in such a directory (then no
  one else can change it), and its target is checked the same way.

The file's own owner and mode are the caller's to check, with
:func:`check_entry` for the directory rule and its own rule for the mode.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = [
    "ROOT_ONLY",
    "TrustedDirectory",
    "UntrustedPathError",
    "check_entry",
    "open_parent",
    "open_trusted",
    "writable_by_others",
]

ROOT_ONLY: frozenset[int] = frozenset({0})
MAX_SYMLINKS = 40  # as the kernel's own limit
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class UntrustedPathError(Exception):
    """The path or one of its directories could be changed by someone else;
    the message names the component and says how to fix it."""


class TrustedDirectory:
    """An open directory (``O_PATH``) reached through trusted components.
    A plain class, not a dataclass: every login walks the config's path, and
    importing dataclasses costs ~7 ms (docs/pam.md, "Speed")."""

    __slots__ = ("fd", "info", "path")

    def __init__(self, fd: int, info: os.stat_result, path: str):
        self.fd = fd
        self.info = info
        self.path = path  # as walked, symlinks resolved: for messages

    def close(self) -> None:
        os.close(self.fd)


def writable_by_others(info: os.stat_result) -> bool:
    return bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def check_entry(parent: TrustedDirectory, info: os.stat_result, path: str,
                owners: frozenset[int] = ROOT_ONLY) -> None:
    """Refuse ``path`` (found in ``parent``) if someone else could replace it."""
    if not writable_by_others(parent.info):
        return
    sticky = bool(parent.info.st_mode & stat.S_ISVTX)
    if sticky and info.st_uid in owners:
        return  # /tmp-like: others cannot rename or remove an entry that is root's
    mode = stat.S_IMODE(parent.info.st_mode)
    why = ("sticky, but the entry is not owned by root" if sticky
           else "so another user could replace what it holds")
    raise UntrustedPathError(
        f"directory {parent.path} is writable by group or others (mode {mode:04o}), {why}; "
        f"run: chmod go-w {parent.path}" + ("" if sticky else f" (and check {path})"))


def _check_directory(info: os.stat_result, path: str, owners: frozenset[int]) -> None:
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedPathError(f"{path} is not a directory")
    if info.st_uid not in owners:
        raise UntrustedPathError(f"directory {path} is owned by uid {info.st_uid}, not root; "
                                 f"run: chown root {path}")


def _joined(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def open_parent(path: str, owners: frozenset[int] = ROOT_ONLY) -> tuple[TrustedDirectory, str]:
    """The trusted directory holding ``path``'s last component, and that
    component's name (which need not exist yet).  The caller closes it."""
    if not os.path.isabs(path):
        raise UntrustedPathError(f"{path} is not an absolute path")
    root_fd = os.open("/", _PATH_FLAGS | os.O_DIRECTORY)
    stack: list[TrustedDirectory] = [TrustedDirectory(root_fd, os.fstat(root_fd), "/")]
    names = [n for n in path.split("/") if n not in ("", ".")]
    links = 0
    name = ""
    try:
        _check_directory(stack[0].info, "/", owners)
        if writable_by_others(stack[0].info):
            raise UntrustedPathError("/ is writable by group or others")
        while names:
            name = names.pop(0)
            here = stack[-1]
            if name == "..":
                if len(stack) > 1:
                    stack.pop().close()
                continue
            shown = _joined(here.path, name)
            try:
                fd = os.open(name, _PATH_FLAGS, dir_fd=here.fd)
            except FileNotFoundError:
                if not names:
                    break  # the file itself may be created by the caller
                raise FileNotFoundError(errno.ENOENT, "no such directory", shown) from None
            info = os.fstat(fd)
            if stat.S_ISLNK(info.st_mode):
                try:
                    check_entry(here, info, shown, owners)
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise UntrustedPathError(f"{path}: too many symbolic links")
                    target = os.readlink(name, dir_fd=here.fd)
                finally:
                    os.close(fd)
                if target.startswith("/"):
                    while len(stack) > 1:
                        stack.pop().close()
                names[:0] = [n for n in target.split("/") if n not in ("", ".")]
                continue
            if not names:  # the last component: the caller opens and checks it
                os.close(fd)
                break
            directory = TrustedDirectory(fd, info, shown)
            stack.append(directory)
            _check_directory(info, shown, owners)
            check_entry(here, info, shown, owners)
        else:
            raise UntrustedPathError(f"{path} names a directory, not a file")
        return stack.pop(), name
    finally:
        for directory in stack:
            directory.close()


def open_trusted(path: str, flags: int, mode: int = 0o600,
                 owners: frozenset[int] = ROOT_ONLY) -> tuple[int, os.stat_result]:
    """``os.open(path, flags)`` through trusted directories, never through a
    symlink at the end; returns the descriptor and its fstat.  The entry
    rule of :func:`check_entry` is applied; the file's mode is the caller's."""
    parent, name = open_parent(path, owners)
    try:
        if writable_by_others(parent.info) and not parent.info.st_mode & stat.S_ISVTX:
            # Refused whatever the entry: say so before creating anything there.
            check_entry(parent, parent.info, path, frozenset())
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent.fd)
        try:
            info = os.fstat(fd)
            check_entry(parent, info, path, owners)
        except BaseException:
            os.close(fd)
            raise
        return fd, info
    finally:
        parent.close()
