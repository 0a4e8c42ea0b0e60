"""``python -m cotdistill`` = the ``cotdistill`` command."""
from cotdistill.cli import app

app()
