"""The library's commands of `dispatcher` (typer), and what they print (rich).

workers/cli.py, the console script, includes these and adds the commands that need Celery or the channels.
"""
