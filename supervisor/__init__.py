"""The supervisor: tasks, admission by memory budget, workers, watchdog. Runs inside the API process."""
