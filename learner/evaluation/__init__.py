"""Evaluation: in this process (the main job's final table) and over the bus (``userrl eval``)."""
