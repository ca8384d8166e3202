"""Volumes watched over time: history, projection, risk and alerts.

:mod:`.projection` is the pure arithmetic (least-squares rate, seconds to the reserve, the
risk with its reasons); :mod:`.history` the bounded sample tiers; :mod:`.store` keeps
history and the latest status per volume (abstract, Redis, stub); :mod:`.monitor` turns a
scan of a worker's roots into volume records.
"""

from __future__ import annotations
