"""The reward role (``userrl worker reward``): trajectories in, scored GRPO groups out."""
