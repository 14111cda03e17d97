"""celery-stack sample ETL application: audio analysis and website checks on Celery.

The Celery app is ``celery_stack_app.celery_app:app``; importing this package
alone does not build it (nor read any setting).
"""

__version__ = "0.1.0"
