"""Batch size x learning rate studies: trial space, claims store, runner."""
