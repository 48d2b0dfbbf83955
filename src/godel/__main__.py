from godel.cli.main import run

run()
