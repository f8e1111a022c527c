"""nt_limo plugin for nt-harness."""
