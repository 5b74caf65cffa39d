"""``cloudtasks_emulator``, ``cloudtasks_sweep``, ``cloudtasks_status``, ``cloudtasks_purge``
and ``cloudtasks_queues``."""
