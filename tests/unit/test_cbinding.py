"""sharedpg_tools/cbinding.py's types behave as ctypes' own: the same sizes and codes, the same conversions
of arguments and results, on the libpq the probe loads (every call of the probe path goes through them; the
probe's own tests, tests/func/test_quick_probe.py, run it against real servers)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from sharedpg_tools import cbinding, libpq


@pytest.mark.parametrize("name", ["c_int", "c_void_p", "c_char_p"])
def test_each_type_is_ctypes_own_in_size_and_code(name: str) -> None:
    ours, theirs = getattr(cbinding, name), getattr(ctypes, name)
    assert (ctypes.sizeof(ours), ours._type_) == (ctypes.sizeof(theirs), theirs._type_)


def _bound(module: object, path: str) -> ctypes.CDLL:
    lib = module.CDLL(path)  # type: ignore[attr-defined]
    lib.PQresStatus.restype = module.c_char_p  # type: ignore[attr-defined]
    lib.PQresStatus.argtypes = [module.c_int]  # type: ignore[attr-defined]
    return lib  # type: ignore[no-any-return]


def test_functions_return_and_convert_as_ctypes_does() -> None:
    path = libpq._candidate_paths()[0]
    ours, theirs = _bound(cbinding, path), _bound(ctypes, path)
    assert ours.PQlibVersion() == theirs.PQlibVersion() > 100000  # an int until told otherwise
    assert [ours.PQresStatus(n) for n in range(10)] == [theirs.PQresStatus(n) for n in range(10)]
    assert ours.PQresStatus(2) == b"PGRES_TUPLES_OK"  # bytes, as c_char_p gives them
    with pytest.raises(ctypes.ArgumentError):
        ours.PQresStatus("two")  # the argument types are enforced
    with pytest.raises(AttributeError):
        ours.PQnoSuchFunction  # noqa: B018


def test_conninfo_parsing_through_structures_arrays_and_pointers() -> None:
    """PQconninfoParse: a pointer to an array of structures out, a char** out-argument for its error."""
    assert libpq.parse_conninfo("host=db port=5433 dbname='my db'") == {"host": "db", "port": "5433",
                                                                        "dbname": "my db"}  # fmt: skip
    with pytest.raises(ValueError, match='invalid connection option "colour"'):
        libpq.parse_conninfo("colour=blue")


def test_the_probe_path_imports_neither_ctypes_nor_os() -> None:
    """What the module is for: started as the image's launcher starts it (``python -IS``), the lean path
    loads libpq without ctypes' __init__ (3.3 ms of every probe) and without os (1.6 ms, launch.py)."""
    code = ("import sys; sys.path += sys.argv[1].split(':'); from sharedpg_tools import launch, quick, libpq; "
            "launch.environ(); libpq.lib(); print(sorted({'ctypes', 'os'} & set(sys.modules)))")  # fmt: skip
    packages = [str(Path(libpq.__file__).parents[1]), *sys.path]
    done = subprocess.run([sys.executable, "-IS", "-c", code, ":".join(packages)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_a_library_that_cannot_load_is_an_os_error_naming_it() -> None:
    """As ctypes.CDLL: the loader's own message, so libpq.py can try the next candidate and say why."""
    with pytest.raises(OSError, match=r"libpq-missing\.so\.9"):
        cbinding.CDLL("libpq-missing.so.9")
