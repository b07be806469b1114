"""Identity rules, in one place above the store (`store` keeps persistence only): the open-set decision, a
track's vote, visitors and their merges, operators' corrections and erasure. The worker, the command line and the
dashboard apply them through this package, so all three follow the same rules."""
