"""The working state in Redis: the key schema (every key name, in redis_keys), accounts, history, the
sharded schedule with its leases, the claim ledger, the send gate, the provider-status ranks, the phone
index, the dead-letter stream, the metrics read from Redis, and the embedded Redis server used when none is
configured.

It builds on the functional core (`dispatcher.core`) and knows nothing of the record, the API, the commands,
the workers or the channels.
"""
