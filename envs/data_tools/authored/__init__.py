"""The authored sources of the bundled datasets, one module per gym (``envs/data/<gym>/``).

Each module holds hand-written tables and, where the tasks are sampled, a seeded ``build``;
:mod:`userrl.envs.data_tools.generate` turns them into the committed files.
"""
