"""Gyms, datasets and the env worker. Importing this package registers the gyms with
Gymnasium, so ``gymnasium.make("userrl/Telepathy-v0")`` works after ``import userrl.envs``."""

from userrl.envs import gymnasium_adapter as _gymnasium_adapter  # noqa: F401  (registers ids)
