"""LA-CMFER: cross-multidomain facial expression recognition (usable without Ray).

Rooms, each importing only those listed before it:

- the foundation (this folder): `errors`, `names` (the registries' names, importing
  nothing of the project), `plugins`, `files` (whole-file writes, the one lock),
  `hparams` (each searchable key with its search distribution and methods; the
  defaults are the config schema's) and `config` (the typed
  experiment file);
- `data`: list files, SynthFER, the decoded-image cache, splits and loaders;
- `method`: the network and its trunk weights, losses, adaptation methods, validators,
  schedules;
- `run`: the Trainer, the one run lifecycle (`run.lifecycle`), devices, TensorBoard,
  final-training runs;
- `reports`: what is computed from finished runs (the final report, oracle gaps).
"""

__version__ = "0.1.0"
