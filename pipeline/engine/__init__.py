"""The explain job's engine: :mod:`.pool` (the Ray actors and tasks), :mod:`.policy` (the
scheduling rules, no Ray), :mod:`.faults` (what a Ray error means) and :mod:`.loop` (ties
them to the writer and the progress line)."""
