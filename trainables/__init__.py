"""Thin Ray adapters of `lacmfer.run.lifecycle`: the Tune trial, the final-training task, and Ray session helpers."""
