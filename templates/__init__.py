"""Script templates for --print-only; shipped inside wrapdock as wrapdock._templates."""
