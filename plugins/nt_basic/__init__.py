"""nt_basic plugin for nt-harness."""
