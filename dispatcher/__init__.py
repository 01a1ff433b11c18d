"""The collections contact dispatcher: strategy, compliance, planner and state."""
