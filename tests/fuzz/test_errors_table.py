"""The README's Errors table names every status a caller can get (issue 16's last "done when").

The fuzzer checks the statuses it meets against the table; this checks the
statuses the code declares: every error class of server/errors.py, found by
walking the hierarchy, so a new class with a new status fails here until the
table has a row for it.
"""

from __future__ import annotations

import grpc

from server import errors
from tests.fuzz.errors_table import documented_statuses


def _classes(root: type[errors.SwitchyardError]) -> list[type[errors.SwitchyardError]]:
    found = [root]
    for subclass in root.__subclasses__():
        found.extend(_classes(subclass))
    return found


def test_the_errors_table_has_a_row_for_the_status_of_every_error_class():
    declared = {cls.code.name: cls.__name__ for cls in _classes(errors.SwitchyardError)}
    assert len(declared) > 5  # the walk found the hierarchy
    missing = {name: cls for name, cls in declared.items() if name not in documented_statuses()}
    assert not missing, f"README ## Errors has no row for {missing}"


def test_the_table_documents_only_real_statuses():
    assert documented_statuses() <= {code.name for code in grpc.StatusCode}
