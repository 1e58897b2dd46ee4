# Gunicorn settings, read by `gunicorn -c platform/gunicorn.conf.py` (a config file, not an importable module).
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# sync: one request at a time per worker, the connection closed after each. gthread (with one thread) keeps a
# client's connection open between requests, but measured no faster for order entry here (bench/orders_api.py,
# two pairs: 134-160 against 144-165 orders/s, p99 114-119 against 89-97 ms): DEVELOPERS.md, "Order entry speed".
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
