"""The checkpoint catalog: schema, sources, build and queries (no jax/flax/tensorflow)."""
