"""The model layer: per-stream stateful recurrent autoencoders, stacked and batched (no I/O)."""
