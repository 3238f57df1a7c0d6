"""Collection: the Segment-compatible HTTP API, the pixel and file sources."""
