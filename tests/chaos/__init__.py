"""The chaos suite: real processes, real faults, counted from the provider's own records (see docs/reliability.md)."""
