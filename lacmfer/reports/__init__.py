"""Reports computed from finished runs: the final-training report, oracle gaps of validators."""
