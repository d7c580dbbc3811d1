"""File signatures that several layers check (pure constants, no imports).

An ``.npz`` is a zip archive; a local file header (``PK\\x03\\x04``) starts any archive
with members and an end-of-central-directory record (``PK\\x05\\x06``) an empty one.
Checking them first tells an HTML/XML error page saved under a ``.npz`` name from a
checkpoint before numpy gives a confusing error.
"""

ZIP_MAGIC: tuple[bytes, ...] = (b"PK\x03\x04", b"PK\x05\x06")
