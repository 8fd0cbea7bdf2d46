from wrapdock.cli import run

run()
