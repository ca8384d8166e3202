"""``/v1/whoami``: the calling token's name and scopes (what the dashboard may offer)."""
