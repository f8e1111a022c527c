"""nt_naturalthoughts plugin for nt-harness."""
