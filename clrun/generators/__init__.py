"""Generators: models of the data that strategies train continually and replay from.

Each is a LightningModule (`Generator`) trained by its own Trainer at every task, on the
accelerator, precision and DDP strategy of the classifier. `conf/generator/` selects one.
"""
