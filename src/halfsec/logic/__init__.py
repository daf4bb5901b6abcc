"""Logic: understand the transcript (intent + slots) and stream the reply text.

Entry points: :func:`create_logic` with :class:`LogicOptions`; domain files are
loaded with :func:`load_domain` (see :mod:`halfsec.logic.domain` for the format).
"""

from halfsec.logic.domain import Domain, load_domain
from halfsec.logic.engine import LogicEngine, ReplyClause, Understanding
from halfsec.logic.factory import create_logic
from halfsec.logic.options import LogicOptions

__all__ = [
    "Domain",
    "LogicEngine",
    "LogicOptions",
    "ReplyClause",
    "Understanding",
    "create_logic",
    "load_domain",
]
