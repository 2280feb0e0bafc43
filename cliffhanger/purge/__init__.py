"""Edge purging: which surrogate keys a change touches (`keys`), how to purge them at each target
(`clients`), and how to send a batch politely (`sender`: batch limits, token bucket, retries)."""
