"""The debtor's privacy in the core: which fields are personal (masked in logs and Flower, erased by retention)
and the signed token with which a debtor withdraws from email."""
