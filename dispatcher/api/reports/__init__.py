"""Reports the API serves, read from the record: results per variant (variants)."""
