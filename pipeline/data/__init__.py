"""Shards -> decoded, formatted, masked, collated batches (see pipeline.data.loader)."""
