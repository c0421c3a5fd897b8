"""userrl: train and evaluate user-centric LLM agents with RL over a Redis Streams bus."""

__version__ = "0.1.0"
