"""A small Django project the benchmark serves with gunicorn: the real app, trivial tasks.

Its settings come from one environment variable, ``CLOUDTASKS_BENCH_CONFIG`` (JSON),
which ``benchmarks.run`` sets for the server processes and for itself.
"""
