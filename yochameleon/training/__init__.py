"""The training recipe (setup, step, evaluate, checkpoint, finish), its distributed helper, checkpoints and logging."""
