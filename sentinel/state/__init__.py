"""State: checkpoints written atomically and loaded without unpickling code."""
