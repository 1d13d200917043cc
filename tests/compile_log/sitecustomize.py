"""Logs every numba compile of this process and its children (a test aid).

Put this folder on ``PYTHONPATH`` and set ``FLOWATLAS_COMPILE_LOG`` to a file: each compile
appends one line, ``process name<TAB>module.function<TAB>argument types``.
tests/test_warmup.py uses it to see which process compiled which kernel during a cold demo.
"""

import os

if os.environ.get("FLOWATLAS_COMPILE_LOG"):
    import multiprocessing

    from numba.core import event

    class _Log(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            pass

        def on_end(self, ev: event.Event) -> None:
            func = getattr(ev.data.get("dispatcher"), "py_func", None)
            name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"
            with open(os.environ["FLOWATLAS_COMPILE_LOG"], "a") as f:
                args = repr(tuple(ev.data.get("args", ())))
                f.write(f"{multiprocessing.current_process().name}\t{name}\t{args}\n")

    event.register("numba:compile", _Log())
