"""Store kinds: one package per kind of database, split by pipeline layer.

`KIND/__init__.py` declares the kind (its attributes, its step options, what the
checker calls its dump, how a declaration binds); `KIND/commands.py` builds its
commands (dump, restore, drop, preflight probes). `mdsl check` loads only the
declarations; `registry.py` lists the kinds.
"""
