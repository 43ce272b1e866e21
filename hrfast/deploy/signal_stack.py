"""A lasting alternate signal stack for the calling thread (Linux), kept against OpenVINO's.

OpenVINO's CPU plugin (seen in 2026.4) gives the thread that creates it a new alternate signal
stack (large enough for AMX state) and unmaps it when the plugin is destroyed, restoring the one
it replaced only if its own is still current. Two plugins destroyed in the order they were made
leave the thread pointing at unmapped memory, and the next signal whose handler runs on that stack
(every Python handler: SIGCHLD from a DataLoader worker, SIGINT on Ctrl-C) kills the process with
SIGSEGV. Installing a stack of our own that is never freed after each plugin is made breaks the
chain: a plugin's destructor then finds another stack current and only unmaps its own.
"""
from __future__ import annotations

import ctypes
import functools
import sys
import threading

SS_ONSTACK = 1
STACK_BYTES = 1 << 18       # over the kernel's AT_MINSIGSTKSZ with AMX tile state (~11 KiB) many times

_stacks: dict = {}          # thread ident -> the buffer its stack lives in (kept for the process)


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.lru_cache(maxsize=None)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _sigaltstack(new, old) -> bool:
    return _libc().sigaltstack(ctypes.byref(new) if new is not None else None,
                            ctypes.byref(old) if old is not None else None) == 0


def current_signal_stack():
    """The calling thread's alternate signal stack as (address, bytes, flags), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    now = _StackT()
    return (now.ss_sp or 0, now.ss_size, now.ss_flags) if _sigaltstack(None, now) else None


def hold_signal_stack() -> bool:
    """Make the calling thread's alternate signal stack one that lives as long as the process.
    Returns whether it is in place (False off Linux, or while a handler runs on the current one)."""
    now = current_signal_stack()
    if now is None or now[2] & SS_ONSTACK:
        return False
    buf = _stacks.get(threading.get_ident())
    if buf is None:
        buf = _stacks[threading.get_ident()] = ctypes.create_string_buffer(STACK_BYTES)
    if now[0] == ctypes.addressof(buf):
        return True
    return _sigaltstack(_StackT(ctypes.addressof(buf), 0, STACK_BYTES), None)
