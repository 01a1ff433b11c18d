"""Champion/challenger in the core: which variant an account belongs to, what a strategy is (its name and the
digest of its content), and how two variants' results compare (intervals and the sample they need).

Pure functions of their arguments: the state keeps the active set, the record keeps the results.
"""
