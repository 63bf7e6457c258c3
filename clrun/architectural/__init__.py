"""Architectural (parameter-isolation) methods: progressive networks, Piggyback, supermasks in
superposition and task-conditioned hypernetworks, on networks that take the task id."""
