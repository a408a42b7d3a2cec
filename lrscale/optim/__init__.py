"""The schedule, scaling-rule and optimizer catalogue (optax-based)."""
