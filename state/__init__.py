"""JSON Schemas of the state files; shipped inside wrapdock as wrapdock._state."""
