"""The explain job's exit codes: 0 every row explained, 1 fatal or interrupted (rerun the
same command), 2 usage (bad options or catalogue, a refused resume, the output held by
another driver), 3 some rows in ``errors``."""
EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_SOME_ERRORS = 0, 1, 2, 3
