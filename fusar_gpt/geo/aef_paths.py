"""Remote AEF roots as GDAL sees them, and where fetched or derived AEF files are cached on disk.

Why apart from the index: these answer "how is this path opened" (a bucket URL as a GDAL virtual path, read
anonymously unless the user has credentials) and "where does a local copy go", for the index reader, the tile
reader and the puller alike, none of which should reach into another for it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def is_remote(path: str) -> bool:
    return str(path).startswith(("/vsi", "s3://", "gs://", "http://", "https://"))


def gdal_path(path: str) -> str:
    """Bucket URLs as GDAL virtual paths (``s3://b/k`` -> ``/vsis3/b/k``). ``http(s)://`` stays as it is: those
    tiles are read through :mod:`.aef_http`, not GDAL's ``/vsicurl/`` (which fails silently on dropped
    connections; see there)."""
    for scheme, prefix in (("s3://", "/vsis3/"), ("gs://", "/vsigs/")):
        if path.startswith(scheme):
            return prefix + path[len(scheme):]
    return path


CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                  "AWS_NO_SIGN_REQUEST")


def gdal_options(path: str) -> dict[str, str]:
    """GDAL configuration a tile at ``path`` is read under. ``s3://`` (``/vsis3/``) paths are read anonymously
    (``AWS_NO_SIGN_REQUEST=YES``): the public bucket needs no account, and GDAL would otherwise look for
    credentials, find none and fail. Not when the user has configured any (``CREDENTIAL_ENV``, or a shared
    credentials file): a private mirror must be read with them, and their own ``AWS_NO_SIGN_REQUEST`` wins.
    ``gs://`` needs nothing here: Google's bucket is requester-pays, so GDAL's own ``GS_USER_PROJECT`` (and
    credentials) must come from the user's environment, which GDAL reads itself."""
    p = str(path)
    if not p.startswith(("s3://", "/vsis3/")):
        return {}
    if any(os.environ.get(k) for k in CREDENTIAL_ENV):
        return {}
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(os.path.expanduser("~"), ".aws",
                                                                           "credentials")
    if os.path.isfile(shared):
        return {}
    return {"AWS_NO_SIGN_REQUEST": "YES"}


def default_cache_dir() -> Path:
    env = os.environ.get("FUSAR_GPT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fusar-gpt"


def cache_path(key: str, cache_dir, suffix: str) -> Path | None:
    """Where to cache; ``cache_dir=False`` turns caching off."""
    if cache_dir is False:
        return None
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return base / "aef" / f"{digest}.{suffix}"
