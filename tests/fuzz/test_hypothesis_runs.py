"""The fuzz tests' rerun covers CPython's AST bug and nothing else."""

from __future__ import annotations

import pytest
from support.hypothesis_runs import CPYTHON_AST_BUG, run_given


class _Flaky(Exception):
    pass


def _failing(errors: list[BaseException]) -> tuple[list[int], object]:
    calls: list[int] = []

    def test() -> None:
        calls.append(1)
        if errors:
            raise errors.pop(0)

    return calls, test


def _ast_bug_inside_a_group() -> BaseException:
    """As Hypothesis reports it: a group whose member was raised while handling the SystemError."""
    member = KeyError("lambda source")
    member.__context__ = SystemError(f"{CPYTHON_AST_BUG} (before=273, after=323)")
    return ExceptionGroup("Inconsistent results from replaying a test case!", [_Flaky("x"), member])


def test_a_run_broken_by_the_ast_bug_runs_again() -> None:
    calls, test = _failing([_ast_bug_inside_a_group()])
    run_given(test)  # type: ignore[arg-type]
    assert len(calls) == 2


def test_any_other_failure_is_raised_at_once() -> None:
    calls, test = _failing([AssertionError("a 500 from the API")])
    with pytest.raises(AssertionError, match="a 500"):
        run_given(test)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_the_ast_bug_every_time_still_fails() -> None:
    calls, test = _failing([SystemError(CPYTHON_AST_BUG) for _ in range(5)])
    with pytest.raises(SystemError):
        run_given(test, attempts=3)  # type: ignore[arg-type]
    assert len(calls) == 3
