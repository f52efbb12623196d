"""txm: a server for industrial meters.

Tiger meter controllers upload samples and fetch each other's latest values over TTP;
txm stores them, shows them on the web, emails alarms and speaks LoggerNet Data Export.
The library is the product: ``txm.config`` loads settings, ``txm.db`` opens the database,
and the command line in ``txm.cli`` is a thin skin over both.
"""

from txm.errors import TxmError

__version__ = "0.1.0"

__all__ = ["TxmError", "__version__"]
