"""Search spaces, the Tuner builder, the per-split driver and result export (Ray Tune + Optuna)."""
