"""Running a compiled plan: backends (local, Fabric SSH), transfers, preflight, journal."""
