"""nt_sft plugin for nt-harness."""
