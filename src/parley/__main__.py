from parley.cli import app

app(prog_name="parley")
