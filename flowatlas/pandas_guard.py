"""A build without pandas: pyarrow's implicit imports of pandas refused while a block runs.

pyarrow imports pandas the first time a process converts between Arrow and NumPy: its
``pa.array`` probe asks whether the values are pandas objects, and its C++ Arrow-to-NumPy
converter (``to_numpy``, ``np.asarray`` of an array) initialises pandas' static data first.
Neither needs pandas for what a build converts (NumPy arrays and Arrow arrays of numbers,
strings and timestamps), but the import is 0.1 CPU s of Python holding the GIL, ahead of the
first map task of every build (a 1 M-record build takes about 1 s). Both probes cope with a
pandas that cannot be imported: the Python one answers "not pandas", the C++ one skips the
static data.

:func:`implicit_pandas_refused` makes such imports fail while it runs: the import of
``pandas`` is refused when no Python code asked for it, that is when the innermost Python
frame below the import machinery is not executing an ``import`` statement (nor
``importlib.import_module``). Code that imports pandas itself still gets it. On leaving, the
finder goes and pyarrow's probe forgets its answer, so a later pandas object is recognised as
before. It changes how the whole process imports while it runs, so only a command that runs
nothing but flowatlas uses it (``flowatlas build``), not the library.
"""

from __future__ import annotations

import contextlib
import opcode
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import FrameType

#: the module refused
PANDAS = "pandas"
_IMPORT_NAME = opcode.opmap["IMPORT_NAME"]
_BOOTSTRAP = "<frozen importlib._bootstrap"  # also matches _bootstrap_external


class ImplicitPandasFinder:
    """A meta path finder that refuses pandas to imports no Python code asked for."""

    def __init__(self) -> None:
        #: how many imports it refused
        self.refused = 0

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        """Refuse ``pandas`` (raise ``ModuleNotFoundError``) unless a Python ``import``
        statement or ``importlib.import_module`` asks for it; leave every other import to
        the finders after it (None)."""
        if name != PANDAS or asked_by_python(sys._getframe(1)):
            return None
        self.refused += 1
        raise ModuleNotFoundError(f"No module named {name!r} (implicit import refused)", name=name)


def asked_by_python(frame: FrameType | None) -> bool:
    """Whether the import under way (``frame``: a frame of the import machinery) was asked
    for by Python code: its innermost frame outside the machinery is executing an
    ``import`` statement, or is ``importlib.import_module``. An import made by C code (an
    extension module's) has only the frame of the Python code that called into it, which is
    executing a call."""
    while frame is not None and frame.f_code.co_filename.startswith(_BOOTSTRAP):
        frame = frame.f_back
    if frame is None:
        return True  # nothing to tell by: not ours to refuse
    code = frame.f_code
    if code.co_filename.endswith(("importlib/__init__.py", "importlib\\__init__.py")):
        return True
    return 0 <= frame.f_lasti < len(code.co_code) and code.co_code[frame.f_lasti] == _IMPORT_NAME


@contextlib.contextmanager
def implicit_pandas_refused() -> Iterator[ImplicitPandasFinder | None]:
    """Within the block, imports of pandas that no Python code asked for fail at once
    (module docstring); yields the finder (None where pandas is imported already, so there
    is nothing to save). Afterwards the finder is removed and, if it refused anything,
    pyarrow's probe is reset to ask again."""
    if PANDAS in sys.modules:
        yield None
        return
    finder = ImplicitPandasFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        if finder.refused:
            _forget_pyarrow_answer()


def _forget_pyarrow_answer() -> None:
    """Make pyarrow's pandas probe, which remembers a failed import, try again next time
    (re-initialising its shim: nothing is imported now)."""
    lib = sys.modules.get("pyarrow.lib")
    shim = getattr(lib, "_pandas_api", None)
    if shim is not None:
        with contextlib.suppress(Exception):
            shim.__init__()
