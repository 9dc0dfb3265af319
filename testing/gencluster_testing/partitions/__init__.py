"""The partition scenarios' harness: the id_server under test, a recorded history of client
operations, and the checkers that judge a history (linearizability per group, availability,
merge outcomes)."""
