"""Thin Ray adapters of `lacmfer.run`: the Tune trial, the final-training task, and Ray session helpers."""
