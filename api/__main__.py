"""``python -m api``: serve on $HOST:$PORT with the settings from the environment."""

from api.main import serve

serve()
