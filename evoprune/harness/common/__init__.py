"""Building blocks with no harness dependency: errors (exit 2 before heavy work), atomic outputs, text
tables, stage timing, machine load, op and host-sync counting, run-folder locks, command-line override
checks, the sources' hash. Imports nothing else of the harness."""
