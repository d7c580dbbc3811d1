"""Read-only remote access through fsspec: GCS (anonymous by default), local, HTTP(S), S3.

Why a module of its own: every place that touches the outside world (the catalog
build, downloads, ``vitzoo doctor``) needs the same three things, and getting them
slightly wrong in each place is how tools hang or print tracebacks:

* **the right filesystem** for a URL, anonymous and read-only unless the user asks
  for credentials, honouring ``VITZOO_GCS_ENDPOINT`` / ``STORAGE_EMULATOR_HOST``;
* **one metadata shape** whatever the backend: ``size``, ``md5`` (always lowercase
  hex; GCS reports base64 and it is converted), ``crc32c`` (GCS's own spelling:
  base64 of the big-endian 4-byte checksum), ``generation`` (int), ``etag``, ``url``.
  Values a backend does not report are ``None``;
* **one-line errors**: a 403, a 404 or an unreachable host becomes a
  :class:`~vitzoo.errors.VitzooError` that names the URL and the fix.

Two traps handled here, both found by reading gcsfs 2026.x:

* ``import gcsfs`` exports ``ExtendedGcsFileSystem`` unless
  ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``; that class asks the Storage Control
  API over gRPC for the bucket's layout (zonal / hierarchical namespace) before
  reads and waits ~60 s against an emulator that does not speak gRPC. We always use
  ``gcsfs.core.GCSFileSystem``, the plain JSON-API class, so the probe never runs,
  whatever the environment or import order. The AugReg bucket is a flat bucket, so
  nothing is lost.
* gcsfs retries connection errors six times with exponential back-off (~30 s) and
  aiohttp's default is no read deadline at all. A short TCP pre-flight
  (``VITZOO_CONNECT_TIMEOUT``, default 5 s) turns "nothing listens there" into an
  immediate "cannot reach", and every session gets connect/read deadlines.

gcsfs, fsspec and aiohttp are imported inside functions: ``import vitzoo.storage``
stays cheap and never pulls jax, flax or tensorflow.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vitzoo import config
from vitzoo.errors import VitzooError

if TYPE_CHECKING:
    import fsspec

#: Metadata keys every function here returns (``None`` where the backend has no value).
META_KEYS: tuple[str, ...] = ("size", "md5", "crc32c", "generation", "etag", "url")

DENIED_HINT = (
    "use a mirror (VITZOO_MIRRORS), a local copy, your own Google credentials "
    "(`vitzoo download NAME --gcs-auth`), or the Hugging Face copy (`vitzoo download NAME --source hf`)"
)


def connect_timeout() -> float:
    """Seconds to wait for a TCP connection (``VITZOO_CONNECT_TIMEOUT``, default 5)."""
    try:
        return max(0.1, float(os.environ.get("VITZOO_CONNECT_TIMEOUT", "5")))
    except ValueError:
        return 5.0


def read_timeout() -> float:
    """Seconds without a byte before a transfer is abandoned (``VITZOO_READ_TIMEOUT``, 60)."""
    try:
        return max(1.0, float(os.environ.get("VITZOO_READ_TIMEOUT", "60")))
    except ValueError:
        return 60.0


def _client_timeout() -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(
        total=None, connect=None, sock_connect=connect_timeout(), sock_read=read_timeout()
    )


def scheme_of(url: str) -> str:
    """``gs``, ``https``, ``http``, ``s3`` or ``file`` (plain paths are ``file``)."""
    url = str(url)
    if "://" not in url:
        return "file"
    scheme = url.split("://", 1)[0].lower()
    return {"gcs": "gs"}.get(scheme, scheme)


def is_remote(url: str) -> bool:
    """True for URLs that go over the network (everything but local paths)."""
    return scheme_of(url) != "file"


def filesystem(url: str, *, gcs_auth: bool = False) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for ``url``; anonymous and read-only by default.

    ``gs://`` uses the JSON-API GCS filesystem with ``token="anon"`` (or the user's
    Application Default Credentials when ``gcs_auth``) and ``config.gcs_endpoint()``.
    Instances are never taken from fsspec's instance cache, so a changed endpoint or
    environment is honoured on the next call.
    """
    url = str(url)
    scheme = scheme_of(url)
    if scheme == "file":
        from fsspec.implementations.local import LocalFileSystem

        path = url[len("file://"):] if url.startswith("file://") else url
        return LocalFileSystem(skip_instance_cache=True), os.path.abspath(os.path.expanduser(path))
    if scheme == "gs":
        from gcsfs.core import GCSFileSystem  # not gcsfs.GCSFileSystem: see module docstring

        try:
            fs = GCSFileSystem(
                token="google_default" if gcs_auth else "anon",
                access="read_only",
                endpoint_url=config.gcs_endpoint(),
                requests_timeout=_client_timeout(),
                skip_instance_cache=True,
                use_listings_cache=False,
            )
        except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and kin
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise VitzooError(f"--gcs-auth: no usable Google credentials ({first})",
                              "run `gcloud auth application-default login` or set "
                              "GOOGLE_APPLICATION_CREDENTIALS") from None
        return fs, url.split("://", 1)[1].rstrip("/")
    if scheme in ("http", "https"):
        from fsspec.implementations.http import HTTPFileSystem

        fs = HTTPFileSystem(
            skip_instance_cache=True,
            client_kwargs={"timeout": _client_timeout()},
        )
        return fs, url
    if scheme == "s3":
        try:
            import s3fs
        except ImportError:
            raise VitzooError(
                f"cannot read {url}: s3:// needs the s3fs package",
                "install it with `pip install s3fs`, or use a gs://, https:// or local mirror",
            ) from None
        fs = s3fs.S3FileSystem(
            anon=not gcs_auth,
            skip_instance_cache=True,
            config_kwargs={"connect_timeout": connect_timeout(), "read_timeout": read_timeout()},
        )
        return fs, url.split("://", 1)[1].rstrip("/")
    raise VitzooError(
        f"unsupported URL scheme in {url!r}",
        "use gs://, https://, s3://, file:// or a local path",
    )


# --- error mapping -----------------------------------------------------------


def _endpoint_for(url: str) -> tuple[str, int] | None:
    """The (host, port) a request for ``url`` connects to, or None for local files."""
    scheme = scheme_of(url)
    if scheme == "gs":
        target = config.gcs_endpoint() or "https://storage.googleapis.com"
    elif scheme in ("http", "https"):
        target = url
    else:
        return None
    parts = urlsplit(target)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname, port


def _display(url: str) -> str:
    """The URL as shown in messages, with the endpoint named when GCS is redirected."""
    if scheme_of(url) == "gs" and config.gcs_endpoint():
        return f"{url} (via {config.gcs_endpoint()})"
    return url


def unreachable(url: str, reason: str) -> VitzooError:
    where = _endpoint_for(url)
    host = f"{where[0]}:{where[1]}" if where else url
    hint = "check the network, a proxy, or the endpoint setting"
    if scheme_of(url) == "gs" and config.gcs_endpoint():
        hint = "is the emulator running? check VITZOO_GCS_ENDPOINT / STORAGE_EMULATOR_HOST"
    elif scheme_of(url) == "gs":
        hint = "check the network, or use a mirror (VITZOO_MIRRORS) or a local copy"
    return VitzooError(f"cannot reach {host} for {_display(url)}: {reason}", hint)


def denied(url: str, status: int = 403) -> VitzooError:
    text = f"access denied by {_display(url)} (HTTP {status})"
    if scheme_of(url) == "gs":
        text += "; the bucket refuses anonymous reads since Feb 2026"
    return VitzooError(text, DENIED_HINT)


def not_found(url: str) -> VitzooError:
    return VitzooError(f"not found: {_display(url)}", "check the name, or rebuild the index")


def preflight(url: str) -> None:
    """Fail fast with "cannot reach" when nothing answers on the URL's host and port.

    Without it gcsfs spends ~30 s retrying a refused connection. It costs one TCP
    handshake per call (not per chunk); nothing is remembered, so an endpoint that
    goes away is noticed at once.
    """
    where = _endpoint_for(url)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=connect_timeout()):
            pass
    except socket.gaierror as exc:
        raise unreachable(url, f"host name lookup failed ({exc.strerror or exc})") from None
    except ConnectionRefusedError:
        raise unreachable(url, "connection refused") from None
    except TimeoutError:
        raise unreachable(url, f"no answer within {connect_timeout():g} s") from None
    except OSError as exc:
        raise unreachable(url, exc.strerror or str(exc)) from None


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status carried by an exception from gcsfs, aiohttp or s3fs, if any."""
    for attr in ("status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    text = str(exc)
    if text.startswith("Forbidden:"):  # gcsfs.retry.validate_response for 403
        return 403
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it wraps (fsspec's HTTP backend hides a 403 in a 404)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _connection_error_types() -> tuple[type[BaseException], ...]:
    import asyncio

    types: tuple[type[BaseException], ...] = (
        asyncio.TimeoutError, TimeoutError, ConnectionError, socket.gaierror)
    try:
        import aiohttp

        types += (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError)
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        pass
    try:
        from fsspec.exceptions import FSTimeoutError

        types += (FSTimeoutError,)
    except ImportError:  # pragma: no cover
        pass
    return types


def translate(exc: BaseException, url: str) -> VitzooError:
    """Map any backend exception for ``url`` to a one-line :class:`VitzooError`."""
    if isinstance(exc, VitzooError):
        return exc
    chain = _chain(exc)
    statuses = [s for s in (_status_of(e) for e in chain) if s is not None]
    if any(s in (401, 403) for s in statuses):
        return denied(url, next(s for s in statuses if s in (401, 403)))
    if 404 in statuses:
        return not_found(url)
    connection = _connection_error_types()
    for link in chain:
        if isinstance(link, connection) and not isinstance(link, FileNotFoundError):
            reason = (str(link).strip().splitlines() or [type(link).__name__])[0]
            return unreachable(url, reason or type(link).__name__)
    if isinstance(exc, FileNotFoundError):
        return not_found(url)
    if isinstance(exc, PermissionError) and not is_remote(url):
        return VitzooError(f"permission denied reading {url}", "check the file's permissions")
    if statuses:
        return VitzooError(f"{_display(url)} answered HTTP {statuses[0]}",
                           "try again later, or use another source")
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return VitzooError(f"cannot read {_display(url)}: {first_line}",
                       "check the URL, or try another source")


@contextlib.contextmanager
def remote_errors(url: str) -> Iterator[None]:
    """Run a block that talks to ``url``; anything it raises becomes a VitzooError."""
    try:
        yield
    except VitzooError:
        raise
    except Exception as exc:
        raise translate(exc, url) from exc


# --- metadata ----------------------------------------------------------------


def md5_hex(value: str | bytes | None) -> str | None:
    """Normalise an MD5 given as hex or as GCS's base64 to lowercase hex."""
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        return value.hex() if len(value) == 16 else md5_hex(value.decode("ascii"))
    value = value.strip()
    if len(value) == 32:
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    return _b64_digest(value, 16, "md5", "expected 32 hex digits or GCS base64").hex()


def _b64_digest(value: str, length: int, what: str, expected: str) -> bytes:
    """A GCS base64 digest of ``length`` bytes, or a one-line error naming ``what``."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != length:
        raise VitzooError(f"malformed {what} {value!r}", expected)
    return raw


def crc32c_b64(value: str | int | None) -> str | None:
    """Normalise a CRC32C (GCS base64, 8 hex digits, or an int) to GCS's base64 form."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")
    value = value.strip()
    if len(value) == 8 and all(c in "0123456789abcdefABCDEF" for c in value):
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    raw = _b64_digest(value, 4, "crc32c", "expected GCS base64 or 8 hex digits")
    return base64.b64encode(raw).decode("ascii")


def crc32c_of(data: bytes, previous: int = 0) -> int:
    """CRC32C of ``data`` (continuing ``previous``), via google-crc32c (a gcsfs dependency)."""
    import google_crc32c

    return google_crc32c.extend(previous, data)


def _normalise(info: dict[str, Any], url: str) -> dict[str, Any]:
    generation = info.get("generation")
    try:
        generation = int(generation) if generation not in (None, "") else None
    except (TypeError, ValueError):
        generation = None
    md5 = info.get("md5Hash") or info.get("Content-MD5") or info.get("md5")
    try:
        md5 = md5_hex(md5)
    except VitzooError:
        md5 = None
    try:
        crc = crc32c_b64(info.get("crc32c"))
    except VitzooError:
        crc = None
    size = info.get("size")
    return {
        "size": int(size) if size is not None else None,
        "md5": md5,
        "crc32c": crc,
        "generation": generation,
        "etag": info.get("etag") or info.get("ETag"),
        "url": url,
    }


def stat(url: str, *, gcs_auth: bool = False) -> dict[str, Any]:
    """Metadata of one object (keys :data:`META_KEYS`); raises VitzooError if unreadable."""
    url = str(url)
    preflight(url)
    fs, path = filesystem(url, gcs_auth=gcs_auth)
    with remote_errors(url):
        info = fs.info(path)
        if info.get("type") == "directory":
            raise VitzooError(f"{_display(url)} is a folder, not a file",
                              "name a file inside it")
    return _normalise(info, url)


def read_bytes(url: str, *, gcs_auth: bool = False) -> tuple[bytes, dict[str, Any]]:
    """Whole content of a (small) object plus its metadata, checked against each other.

    The size and, where the source reports one, the MD5 are checked, so a read that
    raced with an overwrite or came back short is an error, not silent bad data.
    """
    url = str(url)
    meta = stat(url, gcs_auth=gcs_auth)
    fs, path = filesystem(url, gcs_auth=gcs_auth)
    with remote_errors(url):
        data = fs.cat_file(path)
    if meta["size"] is not None and len(data) != meta["size"]:
        raise VitzooError(
            f"short read from {_display(url)}: got {len(data)} of {meta['size']} bytes",
            "the object may have changed while reading; try again",
        )
    if meta["md5"] is not None:
        import hashlib

        if hashlib.md5(data).hexdigest() != meta["md5"]:
            raise VitzooError(f"md5 mismatch reading {_display(url)}",
                              "the object may have changed while reading; try again")
    return data, meta


def list_objects(prefix_url: str, *, gcs_auth: bool = False) -> list[dict[str, Any]]:
    """Every object under a folder-like prefix, recursively, sorted by name.

    Each entry has ``name`` (relative to the prefix, ``/``-separated) plus the
    metadata keys. A prefix with no objects gives an empty list.
    """
    prefix_url = str(prefix_url).rstrip("/")
    preflight(prefix_url)
    fs, path = filesystem(prefix_url, gcs_auth=gcs_auth)
    with remote_errors(prefix_url):
        found = fs.find(path, detail=True)
    base = path.rstrip("/") + "/"
    entries = []
    for full, info in found.items():
        if info.get("type") == "directory":
            continue
        full = full.replace(os.sep, "/") if not is_remote(prefix_url) else full
        name = full[len(base):] if full.startswith(base) else full.rsplit("/", 1)[-1]
        entry = _normalise(info, f"{prefix_url}/{name}")
        entries.append({"name": name, **entry})
    return sorted(entries, key=lambda e: e["name"])


def iter_chunks(
    url: str, *, start: int = 0, chunk_size: int = 8 << 20, gcs_auth: bool = False
) -> Iterator[bytes]:
    """Stream an object from byte ``start`` in ranged reads of ``chunk_size``.

    Used by resumable downloads: only the bytes from ``start`` on are requested.
    """
    url = str(url)
    preflight(url)
    fs, path = filesystem(url, gcs_auth=gcs_auth)
    with remote_errors(url):
        handle = fs.open(path, "rb", block_size=chunk_size, cache_type="none")
    try:
        with remote_errors(url):
            if start:
                handle.seek(start)
        while True:
            with remote_errors(url):
                chunk = handle.read(chunk_size)
            if not chunk:
                return
            yield chunk
    finally:
        with contextlib.suppress(Exception):
            handle.close()
