"""The local store backend: one directory on this host (see `store.local.store`)."""
