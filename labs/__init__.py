"""The bundled labs (wrapdock lab ls); shipped inside wrapdock as wrapdock._labs."""
