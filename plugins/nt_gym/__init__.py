"""nt_gym plugin for nt-harness."""
