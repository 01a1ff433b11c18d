"""The Celery runtime (app, queues, beat schedule, send tasks, rate limiter): the next capability."""
