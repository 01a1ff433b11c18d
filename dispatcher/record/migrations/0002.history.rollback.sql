DROP TABLE history_entries;
