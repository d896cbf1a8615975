"""The few ctypes types libpq.py binds with, made straight from ``_ctypes``, the C module under ctypes.

Why: in the image, ``import ctypes`` costs about 3.3 ms of CPU, 40 % of a whole ``psql -c 'select 1'``,
because its ``__init__`` makes some forty types and imports ``struct`` and ``types``; ``_ctypes`` alone
costs 0.3 ms. The exec probe needs three types and a library loader, so it makes just those, exactly as
``ctypes/__init__.py`` makes them: the same base classes, ``_type_`` codes and function flags, hence the
same conversions, done in the same C code. ``tests/unit/test_cbinding.py`` checks them against ctypes' own.
Type checkers see ctypes' names.

One difference, on purpose: the library is opened with lazy binding (``RTLD_LAZY``, the dynamic loader's
default, through the process's own ``dlopen``), where ctypes forces ``RTLD_NOW`` and so resolves every
symbol of libpq and of its OpenSSL and Kerberos at load: 0.7 ms more, for functions never called. It costs
no hardening: psycopg-binary's copies are linked without ``-z now``, so their lazily bound table is
writable either way.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ctypes import CDLL, POINTER, Structure, byref, c_char_p, c_int, c_void_p
else:
    import _ctypes
    from _ctypes import POINTER, Structure, byref

    class c_int(_ctypes._SimpleCData):
        _type_ = "i"

    class c_void_p(_ctypes._SimpleCData):
        _type_ = "P"

    class c_char_p(_ctypes._SimpleCData):
        _type_ = "z"

    class _Function(_ctypes.CFuncPtr):
        """A C function of a loaded library; like ctypes, it returns an int until told otherwise."""

        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = c_int

    class CDLL:
        """A shared library, loaded as ``ctypes.CDLL(path)`` loads it but lazily bound (the module says why);
        its functions are its attributes. ``None``: the running program and what it links (libc)."""

        def __init__(self, path):
            self._name = path
            if path is None:
                self._handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)
                return
            handle = _LIBC.dlopen(path.encode(), _RTLD_LAZY | _ctypes.RTLD_LOCAL)
            if not handle:
                raise OSError(_LIBC.dlerror().decode(errors="replace"))
            self._handle = handle

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            function = _Function((name, self))
            setattr(self, name, function)
            return function

    _RTLD_LAZY = 1  # <dlfcn.h>
    _LIBC = CDLL(None)
    _LIBC.dlopen.restype = c_void_p
    _LIBC.dlopen.argtypes = [c_char_p, c_int]
    _LIBC.dlerror.restype = c_char_p


__all__ = ["CDLL", "POINTER", "Structure", "byref", "c_char_p", "c_int", "c_void_p"]
