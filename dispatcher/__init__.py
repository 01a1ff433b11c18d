"""The collections contact dispatcher, in layers; each imports only those below it (the import-direction test):

    core/      the functional core: the rules as pure functions (models, strategy, compliance, planner, stages,
               events), no I/O
    state/     the working state in Redis: key schema, store, claim ledger, send gate, ranks, phone index,
               dead letters
    record/    the durable record in PostgreSQL: archive, trimmed history, closed accounts, retention
    (here)     the shell: the engine (load, apply, plan, commit), its wiring, ad-hoc requests, imports,
               simulation, logging
    api/       the HTTP API, the provider webhooks included
    commands/  the library's commands of `dispatcher` (workers/cli.py adds those that need Celery)

docs/architecture.md draws the whole house, workers/ and channels/ included.
"""
