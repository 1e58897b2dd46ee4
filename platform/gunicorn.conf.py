# Gunicorn settings, read by `gunicorn -c platform/gunicorn.conf.py` (a config file, not an importable module).
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# sync: one request at a time per worker, the connection closed after each. gthread (GUNICORN_THREADS > 1) lets a
# worker hold several orders at once, which trading.batching places in one transaction (group commit): measured
# about as fast as sync with a tenth less CPU per order and a longer tail (bench/orders_api.py --threads 4:
# 166-198 against 154-192 orders/s, p99 90-264 against 64-85 ms), so sync stays the default: DEVELOPERS.md,
# "Order entry speed".
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

