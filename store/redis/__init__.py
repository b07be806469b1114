"""The Redis backend (``store: {type: redis, url: redis://HOST:PORT/DB}``): Redis is the source of truth, every
process searches its own FAISS replica kept current from a change stream (see `store.redis.store`)."""
