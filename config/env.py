"""The one reader of the environment: every setting that varies between runs comes through `env`."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env is a convenience for developers; the process environment always wins.
_dotenv = BASE_DIR / ".env"
if _dotenv.exists():
    environ.Env.read_env(str(_dotenv), overwrite=False)

# Runtime files of the embedded mode (SQLite file, file broker, static files); INGOT_VAR_DIR puts them elsewhere
# (a test running the embedded mode keeps them out of the developer's own var/).
VAR_DIR = Path(env.str("INGOT_VAR_DIR", default="") or BASE_DIR / "var")
