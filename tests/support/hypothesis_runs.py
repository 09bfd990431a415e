"""Running a Hypothesis test past one CPython 3.11 bug that is not ours.

CPython 3.11.7's AST constructor can raise `SystemError: AST constructor recursion depth mismatch`
from `ast.parse` (python/cpython#106905: its depth counter is shared by every thread and not
restored on an error path). Hypothesis calls `ast.parse` itself, to describe the lambdas inside a
strategy (here schemathesis's), so the bug can surface in the middle of a fuzz run: seen once in
this project's clean-clone runs, as a `FlakyFailure` around that `SystemError`. A run that fails for that
reason, and for no other, is run again with fresh examples; any other failure is raised at once.
"""

from __future__ import annotations

from collections.abc import Callable

CPYTHON_AST_BUG = "AST constructor recursion depth mismatch"


def _caused_by_ast_bug(error: BaseException, seen: set[int] | None = None) -> bool:
    seen = set() if seen is None else seen
    if id(error) in seen:
        return False
    seen.add(id(error))
    if isinstance(error, SystemError) and CPYTHON_AST_BUG in str(error):
        return True
    linked = [error.__cause__, error.__context__]
    if isinstance(error, BaseExceptionGroup):
        linked += list(error.exceptions)
    return any(e is not None and _caused_by_ast_bug(e, seen) for e in linked)


def run_given(test: Callable[[], None], *, attempts: int = 3) -> None:
    """Call a `@given` test; again (up to `attempts` in all) only when CPython's AST bug broke it."""
    for attempt in range(1, attempts + 1):
        try:
            test()
            return
        except Exception as e:
            if attempt == attempts or not _caused_by_ast_bug(e):
                raise
