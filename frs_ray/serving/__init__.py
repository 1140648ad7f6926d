"""The FRS service on Ray: voter shard actors, a fuzzing pool, a Serve router, and a client."""
