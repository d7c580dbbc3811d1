"""Getting checkpoint files onto this machine.

``resolve`` turns any checkpoint argument (a path, a URL, a catalog name or an
architecture) into a verified local file; ``cache`` owns the on-disk layout and its
integrity checks; ``hub`` reads timm's copies on the Hugging Face Hub.  Everything here
sits above the catalog (it looks names up there) and above ``weights`` (Hub files are
converted to the release layout before they are cached).
"""
