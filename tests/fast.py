"""Settings that make a ``pal label`` round take seconds on the digits demo, for the tests."""

# the demo's 8x8 digits with a few epochs: seconds, not minutes
FAST_LABEL = [
    "--set", "epochs_task=3",
    "--set", "epochs_scoring=2",
    "--set", "finetune_epochs=2",
    "--set", "subqueries=2",
    "--set", "val_checks=2",
]  # fmt: skip
