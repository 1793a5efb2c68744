"""Hub side: ingest of signed batches, person linkage, households, enrichment, marts.

Works on pseudonyms only: the hub never holds a key that reverses a token or a record ref.
"""
