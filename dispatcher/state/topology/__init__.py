"""Where the state lives beyond one Redis: the clients of the two Redis roles (connections), redis-py's cluster
client with scripts in pipelines and a SCAN cursor per primary (cluster), and the move from the per-account
key layout to the shard layout (key_migration). Part of the state layer."""
