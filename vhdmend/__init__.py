"""vhdmend: the command-line front end of vhdlib (disk commands) and of the service.

The disk commands (:mod:`vhdmend.commands`) use only :mod:`vhdlib`; the service commands
(``up``, ``serve``, ``worker``, ``submit``, ``status``, ``watch``) live in
:mod:`vhdmend.service_cli` and are imported only when one of them is asked for.
"""

from __future__ import annotations

__version__ = "0.1.0"
