"""nt_embedded plugin for nt-harness."""
