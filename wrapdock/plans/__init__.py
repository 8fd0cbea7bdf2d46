"""Planners: pure functions from a request and the current state to an ordered Plan.

One module per capability; nothing here runs a command or touches a file.
"""
