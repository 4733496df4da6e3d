"""Data layer: list files, SynthFER, the decoded-image cache, splits and loaders."""
