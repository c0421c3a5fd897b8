"""userrl: train and evaluate user-centric LLM agents with RL over a Redis Streams bus."""

from userrl.logs import library_defaults as _library_defaults

__version__ = "0.1.0"

# A library stays quiet below warning until the application configures logging (see userrl.logs).
_library_defaults()
