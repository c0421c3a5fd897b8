"""The learner: GRPO on scored groups, and what the main job needs around it.

``grpo_learner`` holds the model and its update, ``losses`` the GRPO objective, ``rewards`` the
turn-credit and advantage maths, ``loop`` the learner process (``userrl learn``), ``dispatch``
the groups it asks for, ``sft`` the cold start and ``main_job`` ``userrl train``. The reward role (its worker) is in
``reward/``; the evaluators, in-process and over the bus (``userrl eval``), are in ``evaluation/``.
"""
