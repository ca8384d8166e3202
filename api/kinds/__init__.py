"""``/v1/kinds``: the job kinds the service runs (what ``type`` may be), read-only."""
