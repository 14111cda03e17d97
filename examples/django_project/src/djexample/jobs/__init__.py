"""Django app holding the example's Celery tasks."""
