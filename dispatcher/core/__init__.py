"""The functional core: the domain's rules as pure functions and values.

Accounts, strategies, the compliance policy, the planner, the stage arithmetic and the events that change an
account, over an injected clock; and the one list of personal fields with their masking. Nothing here does
I/O: no Redis, no PostgreSQL, no HTTP, no Celery (the import-direction test holds it to that), so every rule
is tested exhaustively and the simulation runs the same code as production. It imports only itself and
`config`.
"""
