"""Build-time data tools: the authored sources of the bundled datasets and the UserRL importer.

Nothing here runs inside a deploy. Workers, the learner and the run-time CLI commands
(``userrl train``, ``eval``, ``up``, ``worker``, ...) never import this package
(``tests/test_runtime_imports.py`` checks it); the datasets they read are the files these tools
wrote: the bundled ones under ``envs/data/`` (committed) or an imported folder (``data:``).

- :mod:`.authored`: one module per gym with the hand-written tables and seeded builders behind
  ``envs/data/<gym>/``.
- :mod:`.generate`: writes ``envs/data/`` from them (``python -m userrl.envs.data_tools.generate
  [--check] [--out DIR]``); the output is deterministic and committed.
- :mod:`.importer`: converts the UserRL paper's release into the same layout
  (``userrl data import-userrl SRC --out DIR``, which imports it lazily).

The package ships in the wheel because ``userrl data import-userrl`` needs the importer on a
user's machine; shipping it does not put it on any run-time import path.
"""
