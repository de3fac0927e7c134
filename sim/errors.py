"""One error type for bad user input, so every CLI turns it into one line and exit status 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a profile, scenario, trace or flag. The message names the file and field."""

    def __init__(self, where: str, field: str, problem: str) -> None:
        self.where = where
        self.field = field
        self.problem = problem
        location = f"{where}: {field}" if field else where
        super().__init__(f"{location}: {problem}")
