"""Ray Tune trainables: the thin adapter from a Tune trial to a lacmfer Trainer."""
