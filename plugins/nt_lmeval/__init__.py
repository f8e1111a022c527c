"""nt_lmeval plugin for nt-harness."""
