"""A run: the Trainer, the one run lifecycle, devices, TensorBoard logging, final-training runs."""
