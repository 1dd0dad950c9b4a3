"""``dal search``: the gallery tracklets most similar to query tracklets (exact cosine top-k)."""
