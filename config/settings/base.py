"""Settings shared by every environment; values that vary are read through config.env."""

import pghistory

from config.env import BASE_DIR, VAR_DIR, env

VAR_DIR.mkdir(exist_ok=True)
(VAR_DIR / "static").mkdir(exist_ok=True)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="dev-only-insecure-key-change-me-0123456789abcdefghijklmnop")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "config.apps.IngotAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_countries",
    "django_htmx",
    "pgtrigger",
    "pghistory",
    "members",
    "receipts",
    "compliance",
    "trading",
]

MIDDLEWARE = [
    "config.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "trading.views.portal_context",
            ],
        },
    },
]

# Embedded default: one SQLite file; IMMEDIATE takes the write lock at BEGIN, so two
# processes never deadlock upgrading a read lock (SQLite's stand-in for row locks).
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'ingot.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Server-side parameter binding: the statement text stays the same from call to call, so psycopg prepares a
    # statement once it has run 5 times on a connection and PostgreSQL stops parsing and planning it anew
    # (order entry: ~30 % less PostgreSQL CPU per order). Behind PgBouncer in transaction mode, set
    # DB_SERVER_SIDE_BINDING=false unless it is 1.21+ with max_prepared_statements.
    if env.bool("DB_SERVER_SIDE_BINDING", default=True):
        DATABASES["default"].setdefault("OPTIONS", {}).update({"server_side_binding": True, "prepare_threshold": 5})

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "members.User"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Redis / broker -------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
BROKER_DIR = VAR_DIR / "broker"

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery (read by config.celery with namespace CELERY) ---------------------------
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # Redelivery after a worker dies whole (kill -9, OOM, lost host; a killed pool child is requeued at once
    # by reject_on_worker_lost). With acks_late kombu's Redis transport keeps each delivered message in the
    # `unacked` hash / `unacked_index` zset (scored with the delivery time) until the ack; a live worker's
    # QoS.restore_visible puts back every entry older than visibility_timeout. It sweeps at worker start and
    # then every unacked_restore_interval s, but scans only on every unacked_restore_throttle-th call: kombu's
    # 10 s x 10 meant up to ~100 s (measured 103 s after a kill -9 and restart, tests/proof/test_worker_faults.py).
    # Scanning every 5 s with 30 s visibility puts an abandoned task back <= ~35 s after the kill (issue 8: 60 s).
    # visibility_timeout must exceed the longest task plus its wait in the prefetch buffer, or a live worker's
    # task is restored and run a second time (ours are idempotent, so that costs time, not correctness; all
    # take well under a second except members_screen_all, which grows with the member count).
    # A worker killed while holding the sweep's mutex would block every sweep for unacked_mutex_expire (kombu:
    # 300 s); a scan takes milliseconds and overlapping scans are safe (restore_by_tag is a WATCH transaction).
    # unacked_restore_limit stays None: each scan restores every expired entry, not 10 at a time.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=30),
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 15,
    }
else:
    # Embedded mode: kombu's filesystem transport; worker and beat are still real processes.
    for _sub in ("queue", "processed", "control"):
        (BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "purge-idempotency-keys": {"task": "members.tasks.idempotency_keys_purge", "schedule": 3600.0},
    "rescreen-members-daily": {"task": "compliance.tasks.members_screen_all", "schedule": 86400.0},
    # The database, not the broker, is the source of truth: re-publish what a lost queue dropped (receipts
    # without a result under an active ESG pack, stock statements not reconciled after a minute).
    "pending-work-sweep": {"task": "compliance.tasks.pending_work_sweep", "schedule": 120.0},
    # Assays age: re-evaluate every open receipt daily (only changed results are written).
    "esg-evaluate-all-daily": {"task": "compliance.tasks.esg_evaluate_all", "schedule": 86400.0},
    # No-op unless INGOT_DEMO_MARKET_MAKER is on (the embedded demo run).
    "demo-market-maker": {"task": "trading.tasks.demo_market_maker", "schedule": 60.0},
    # Pricing (trading/pricing_services.py): reference prices and bands for the minute that just closed,
    # candles folded incrementally, and each grade's daily index once due (16:30 CST; catches up a week).
    "reference-prices-every-minute": {"task": "trading.tasks.reference_prices_tick", "schedule": 60.0},
    "candles-fold-every-minute": {"task": "trading.tasks.candles_fold_all", "schedule": 60.0},
    "spot-index-publish-due": {"task": "trading.tasks.index_publish_due", "schedule": 600.0},
}
INGOT_DEMO_MARKET_MAKER = env.bool("INGOT_DEMO_MARKET_MAKER", default=False)

# After-commit publishes (the ESG evaluation of new receipts, the candle fold) are sent by a thread of each web
# process every this many milliseconds, merged, instead of one Celery message per transaction
# (config.after_commit). 0 sends each at its commit.
AFTER_COMMIT_SPOOL_MS = env.int("AFTER_COMMIT_SPOOL_MS", default=200)
# Shows the DEMO banner in the portal.
INGOT_DEMO = env.bool("INGOT_DEMO", default=False)
CELERY_TASK_ALWAYS_EAGER = False

# --- API ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.api.authentication.MemberTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "config.api.schema.IngotAutoSchema",
    "EXCEPTION_HANDLER": "config.api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "config.api.pagination.StrictLimitOffsetPagination",
    "PAGE_SIZE": 50,
    # DRF's scopes and rates on a constant-cost sliding-window counter (config/api/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "config.api.throttling.AnonThrottle",
        "config.api.throttling.UserThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("API_THROTTLE_ANON", default="120/min"),
        "user": env("API_THROTTLE_USER", default="100000/min"),
        "token": env("API_THROTTLE_TOKEN", default="20/min"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Ingot API",
    "DESCRIPTION": (
        "Digital warehouse receipts for minor and strategic metals. Token authentication "
        "(`Authorization: Token <key>`); every creating POST requires an `Idempotency-Key` header. "
        "Errors are JSON `{code, message, details}` with stable codes."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models share one choice set (e.g. order side and trade aggressor); name each set once.
    "ENUM_NAME_OVERRIDES": {
        "SideEnum": "trading.models.Side",
        "OrderStatusEnum": "trading.models.OrderStatus",
        "ReceiptStatusEnum": "receipts.models.ReceiptStatus",
        "KycStatusEnum": "members.models.KycStatus",
        # An attestation's kind, and the kinds a lot nomination covers.
        "AttestationKindEnum": "receipts.models.AttestationKind",
    },
}

# --- Admin security -------------------------------------------------------------------
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 1  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "trading.views.lockout_response"
OTP_TOTP_ISSUER = "Ingot"

# Secret that encrypts the platform's private signing keys at rest (env or a file).
INGOT_KEY_SECRET = env("INGOT_KEY_SECRET", default="")
INGOT_KEY_SECRET_FILE = env("INGOT_KEY_SECRET_FILE", default=str(VAR_DIR / "key-secret"))

IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)

# The audit trail's event tables (compliance.audit) copy each foreign key of the tracked row, and pghistory indexes
# every copy by default: index entries each audited write pays for (receipts, chain events and accounts on order
# entry; ESG results and flags in bulk), while the trail is read by the tracked row (pgh_obj, indexed in
# compliance.audit) and by context (who / why). So a copy is indexed only where a model asks (audited(indexed=...)).
# The ForeignKey default reaches pgh_obj and pgh_context too, hence db_index=True on both.
PGHISTORY_FOREIGN_KEY_FIELD = pghistory.ForeignKey(db_index=False)
PGHISTORY_CONTEXT_FIELD = pghistory.ContextForeignKey(db_index=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.logging.RequestIdFilter"}},
    "formatters": {"json": {"()": "config.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
