"""Celery's own canvas tests, ported: the judge of "behaves like Celery".

The modules port ``t/integration/test_canvas.py`` (``test_canvas_chain``,
``test_canvas_group``, ``test_canvas_chord``, ``test_canvas_serialization``) and the
chord and errback parts of ``t/unit/tasks/test_canvas.py`` (``test_unit_canvas``), one
test per Celery test, named after it, with the suite's tasks in :mod:`.tasks`. Each
runs on the eager and the memory transport; those marked ``emulator`` also run through
the Cloud Tasks emulator delivering to a live HTTP server. Cases Celery marks xfail
because they hang or time out there pass here. Each module's docstring lists the
cases that cannot apply, with the reason.

Counts:

* ``t/integration/test_canvas.py``: 171 tests; 142 ported, all passing; 29 not
  applicable (12 of them Celery's stamping API, 9 ``link`` success callbacks).
* ``t/unit/tasks/test_canvas.py``, chord and errback parts: 68 tests; 28 ported, all
  passing; 40 not applicable (27 of them ``chord.__length_hint__``).
* In all: 239 Celery tests, 170 ported and passing, 69 not applicable; 23 of the
  ported also run through the emulator.
"""
